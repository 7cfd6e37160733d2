// Package configerr is how sipwake's configuration reports its problems:
// each one a Problem that names the key it is about by its path
// (push.apps[0].apns.key_file), all of a config's problems collected in a
// List so that an operator sees every one at once, as Alertmanager does.
// It owns no configuration and reads no files; errors that are about no key
// (a config file that cannot be read, YAML that does not parse) are not
// Problems.
package configerr

import (
	"errors"
	"fmt"
)

// Problem is one thing wrong with the configuration, tied to its key.
type Problem struct {
	Path string // the key's path as written in the file: api.keys[1].sha256
	Msg  string
}

func (p *Problem) Error() string { return p.Path + ": " + p.Msg }

// List collects the problems of a config, or of one section of it, in the
// order they are found. The zero List is empty and ready to use.
type List []*Problem

// Add records a problem with the key at path; format and args make the
// message, as in fmt.Sprintf.
func (l *List) Add(path, format string, args ...any) {
	*l = append(*l, &Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Bad records a value the key at path does not take, saying what it takes:
// `store.record_ttl: "48h0m0s" is not allowed (between 72h and 144h)`.
func (l *List) Bad(path string, value any, allowed string) {
	l.Add(path, "%q is not allowed (%s)", fmt.Sprint(value), allowed)
}

// Take appends the problems another section found, so that a section that
// validates itself (push, api) reports into the config's List.
func (l *List) Take(section List) {
	*l = append(*l, section...)
}

// Err is nil when l is empty, else every problem joined one per line; each
// is found with errors.As.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return errors.Join(l.Errors()...)
}

// Errors is l as a []error, for errors.Join or an Unwrap() []error.
func (l List) Errors() []error {
	errs := make([]error, len(l))
	for i, p := range l {
		errs[i] = p
	}
	return errs
}
