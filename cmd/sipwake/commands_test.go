package main

import (
	"runtime"
	"strings"
	"testing"
)

// sipwake help, -h and --help list every command, one line each, and
// succeed.
func TestHelpListsEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		out, _, err := runCLI(t, nil, "", args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, cmd := range commands() {
			line := usageLine(cmd)
			if n := strings.Count(out, "\n  "+line+" "); n != 1 {
				t.Errorf("%v: %q listed %d times:\n%s", args, line, n, out)
			}
		}
	}
}

// help CMD and CMD -h show the command's flags and succeed.
func TestCommandHelpShowsFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"help", "push", "test"}, []string{"-provider", "-token", "-kind", "-config"}},
		{[]string{"push", "test", "--help"}, []string{"-provider", "-token", "-kind"}},
		{[]string{"healthcheck", "-h"}, []string{"-url", "-ready"}},
		{[]string{"help", "config", "check"}, []string{"-config"}},
		{[]string{"keys", "generate", "-h"}, nil},
		{[]string{"help", "version"}, []string{"sipwake version"}},
	} {
		out, errOut, err := runCLI(t, nil, "", c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		for _, w := range c.want {
			if !strings.Contains(out+errOut, w) {
				t.Errorf("%v: no %q in\n%s%s", c.args, w, out, errOut)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, err := runCLI(t, nil, "", "version")
	if err != nil || !strings.HasPrefix(out, "sipwake "+version+" (commit ") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version: %q, %v", out, err)
	}
}

// A mistyped command is an error naming the closest one, never a start
// of the server with a stray argument.
func TestUnknownCommandNamesTheClosest(t *testing.T) {
	for typed, want := range map[string]string{
		"conifg check": `did you mean "config check"`,
		"pushtest":     `did you mean "push test"`,
		"verison":      `did you mean "version"`,
		"helthcheck":   `did you mean "healthcheck"`,
	} {
		_, _, err := runCLI(t, nil, "", strings.Fields(typed)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", typed, err, want)
		}
	}
	if _, _, err := runCLI(t, nil, "", "help", "nosuch"); err == nil || !strings.Contains(err.Error(), "did you mean") {
		t.Errorf("help nosuch: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "abc", 0}, {"conifg", "config", 2}, {"kitten", "sitting", 3}, {"", "help", 4}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}
