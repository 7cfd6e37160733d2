package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at build time (the Dockerfile: -ldflags "-X main.version=… -X
// main.commit=…"); a plain `go build` in a checkout falls back to what the
// Go toolchain stamped.
var (
	version = "dev"
	commit  = ""
)

// command is one of sipwake's subcommands.
type command struct {
	name    string // "push test"
	usage   string // arguments after the name
	summary string
	run     func(c cli, ctx context.Context, args []string) error
}

// commands is the one list dispatch, help and the "did you mean" come
// from.
func commands() []command {
	return []command{
		{"", "[-config FILE]", "run sipwake until SIGTERM (drain); SIGHUP reloads TLS certificates and push credentials",
			func(c cli, ctx context.Context, args []string) error { return c.serve(ctx, args) }},
		{"config check", "[-config FILE]", "validate a config and print it, secrets redacted",
			func(c cli, _ context.Context, args []string) error { return c.configCheck(args) }},
		{"keys generate", "", "print a new sealing key (32 random bytes, base64)",
			func(c cli, _ context.Context, args []string) error { return c.keysGenerate(args) }},
		{"keys usage", "[-config FILE]", "records per sealing key of a stopped instance",
			func(c cli, ctx context.Context, args []string) error { return c.keysUsage(ctx, args) }},
		{"admin token", "", "print a new admin bearer token and its SHA-256",
			func(c cli, _ context.Context, args []string) error { return c.adminToken(args) }},
		{"admin hash-token", "", "read a token on stdin, print its SHA-256 (admin.token_sha256)",
			func(c cli, _ context.Context, args []string) error { return c.adminHashToken(args) }},
		{"push test", "-provider P -token T [-app A] [-kind K] [-config FILE]", "send one push to a device, to check push credentials",
			func(c cli, ctx context.Context, args []string) error { return c.pushTest(ctx, args) }},
		{"healthcheck", "[-config FILE] [-url U] [-ready]", "exit 0 if the admin listener answers 200 (the image's HEALTHCHECK)",
			func(c cli, ctx context.Context, args []string) error { return c.healthcheck(ctx, args) }},
		{"version", "", "print the version, commit and Go version",
			func(c cli, _ context.Context, args []string) error { return c.version(args) }},
		{"help", "[COMMAND]", "list the commands, or show one command's flags",
			func(c cli, ctx context.Context, args []string) error { return c.help(ctx, args) }},
	}
}

// find picks the command args start with: the longest name that matches
// their first words. The rest of args are the command's.
func find(args []string) (command, []string, bool) {
	var best command
	found := false
	for _, cmd := range commands() {
		words := strings.Fields(cmd.name)
		if len(words) == 0 || len(words) > len(args) || strings.Join(args[:len(words)], " ") != cmd.name {
			continue
		}
		if !found || len(words) > len(strings.Fields(best.name)) {
			best, found = cmd, true
		}
	}
	if !found {
		return command{}, args, false
	}
	return best, args[len(strings.Fields(best.name)):], true
}

// dispatch runs the command args name; flags alone (or none) run sipwake
// itself. -h/--help anywhere a command's flags go shows them and exits 0.
func (c cli) dispatch(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		return c.help(ctx, nil)
	}
	cmd, rest, ok := find(args)
	if !ok {
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			return unknown(strings.Join(args[:min(2, len(args))], " "))
		}
		cmd, rest = commands()[0], args
	}
	err := cmd.run(c, ctx, rest)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the flag set printed its usage
	}
	return err
}

// help lists the commands, or shows one's flags (it runs the command with
// -h, which prints them).
func (c cli) help(ctx context.Context, args []string) error {
	if len(args) > 0 {
		cmd, _, ok := find(args)
		if !ok {
			return unknown(strings.Join(args, " "))
		}
		if _, err := fmt.Fprintf(c.stdout, "usage: %s\n\n%s\n\n", usageLine(cmd), cmd.summary); err != nil {
			return err
		}
		if cmd.name == "help" {
			return nil
		}
		err := cmd.run(c.withFlagOutput(), ctx, []string{"-h"})
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var b strings.Builder
	b.WriteString("sipwake: a push-notification relay for SIP softphones (RFC 8599).\n\nusage:\n")
	for _, cmd := range commands() {
		fmt.Fprintf(&b, "  %-70s %s\n", usageLine(cmd), cmd.summary)
	}
	b.WriteString("\n`sipwake help COMMAND` or `sipwake COMMAND -h` shows a command's flags.\n")
	_, err := io.WriteString(c.stdout, b.String())
	return err
}

func usageLine(cmd command) string {
	return strings.Join(strings.Fields("sipwake "+cmd.name+" "+cmd.usage), " ")
}

// withFlagOutput is c with flag usage written to stdout: asked-for help
// is output, not an error.
func (c cli) withFlagOutput() cli {
	c.stderr = c.stdout
	return c
}

// unknown names the closest command to what was typed.
func unknown(typed string) error {
	best, dist := "", -1
	for _, cmd := range commands() {
		if cmd.name == "" {
			continue
		}
		for _, cand := range []string{cmd.name, strings.Fields(cmd.name)[0]} {
			if d := editDistance(typed, cand); dist < 0 || d < dist {
				best, dist = cmd.name, d
			}
		}
	}
	return fmt.Errorf("unknown command %q; did you mean %q? (sipwake help lists them)", typed, best)
}

// editDistance is Levenshtein's distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// version prints what this binary is.
func (c cli) version(args []string) error {
	if err := noArgs("version", args); err != nil {
		return err
	}
	rev := commit
	if rev == "" {
		rev = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					rev = s.Value
				}
			}
		}
	}
	_, err := fmt.Fprintf(c.stdout, "sipwake %s (commit %s) %s %s/%s\n", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
