package peertest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SippOptions configures one sipp run.
type SippOptions struct {
	// Name labels the run in logs and file names (default: scenario base
	// name).
	Name string
	// Scenario is a scenario file path (see Scenario); ScenarioXML is
	// scenario text instead. One is required.
	Scenario    string
	ScenarioXML string
	// Remote is the peer's ip:port; empty for a UAS that only answers.
	Remote string
	// LocalIP and LocalPort are sipp's -i and -p. Required.
	LocalIP   string
	LocalPort int
	// Transport is sipp's -t: "u1" (default), "un", "t1", "tn".
	Transport string
	// Service is sipp's -s, the [service] user part (default "service").
	Service string
	// Calls is -m (default 1); Rate is -r in calls per second (0: sipp's
	// default of 10); Limit is -l (0: sipp's default).
	Calls int
	Rate  float64
	Limit int
	// Injection is the text of an injection CSV (see RegisterInjection),
	// written to the run's directory and passed as -inf. InjectionFile is
	// an existing file instead.
	Injection     string
	InjectionFile string
	// Keys are passed as -key name value. They are also substituted as
	// [name] into the scenario text before sipp reads it, so a key may
	// stand where sipp takes no keyword, e.g. <recv response="[expect]"/>.
	Keys map[string]string
	// Pause is -d, the length of <pause/> elements without their own
	// milliseconds.
	Pause time.Duration
	// Timeout is sipp's -timeout with -timeout_error (default 20s).
	Timeout time.Duration
	// NoMessageTrace drops -trace_msg (for load runs).
	NoMessageTrace bool
	// TraceRTT adds -trace_rtt: the response times the scenario measures
	// (its start_rtd/rtd attributes) go to a file, read by
	// SippResult.ResponseTimes; with Calls ≥ 1000 the last <100 are
	// missing (sipp writes them in batches).
	TraceRTT bool
	// Args are extra sipp arguments, appended last.
	Args []string
}

// SippResult is what a finished sipp run left behind.
type SippResult struct {
	// ExitCode is sipp's: 0 all calls succeeded, 1 some failed, 97 exit on
	// internal command, 99 no calls processed, 255 (-1) fatal, 254 (-2)
	// could not bind.
	ExitCode int
	// Dir holds the run's files; MessagesPath the -trace_msg log (every
	// message sent and received), ErrorsPath the -trace_err log, StatsPath
	// the -trace_stat CSV, OutputPath sipp's stdout and stderr.
	Dir, MessagesPath, ErrorsPath, StatsPath, OutputPath string
	// Stats is the last row of the -trace_stat CSV, keyed by column name
	// (e.g. "SuccessfulCall(C)", "FailedCall(C)", "OutgoingCall(C)").
	Stats map[string]string
	// Periods is every row of that CSV, the first (sipp's start) included:
	// one per -fd 1 period, with its (P) columns for that period alone.
	Periods []map[string]string
	// Successful and Failed are the cumulative call counts from Stats.
	Successful, Failed int
	// CPU is the user+system time sipp used, once it has exited.
	CPU time.Duration
}

// Messages returns the message trace: every SIP message sipp sent and
// received, so tests can assert on what reached it.
func (r *SippResult) Messages() string {
	b, _ := os.ReadFile(r.MessagesPath)
	return string(b)
}

// Received returns the SIP messages sipp received, each as its full text.
func (r *SippResult) Received() []string {
	var out []string
	for _, blk := range strings.Split(r.Messages(), "\n-------------------------------------") {
		_, msg, ok := strings.Cut(blk, "message received")
		if !ok {
			continue
		}
		if _, after, ok := strings.Cut(msg, ":\n"); ok {
			msg = after
		}
		out = append(out, strings.TrimSpace(msg)+"\n")
	}
	return out
}

// Sipp is a sipp running in the background (StartSipp).
type Sipp struct {
	res  *SippResult
	proc *process
}

// RunSipp runs sipp to completion and returns its result. The error is
// non-nil when sipp did not exit 0; the result is then still returned. The
// run's files are written to the test log if the test fails. Skips the test
// when sipp (Debian sip-tester) is missing.
func RunSipp(t testing.TB, opts SippOptions) (*SippResult, error) {
	t.Helper()
	s := StartSipp(t, opts)
	return s.Wait(opts.timeout() + 15*time.Second)
}

// StartSipp starts sipp in the background, typically as a UAS, and returns
// once it listens on LocalIP:LocalPort. Wait for its result, or Stop it;
// t.Cleanup stops it otherwise.
func StartSipp(t testing.TB, opts SippOptions) *Sipp {
	t.Helper()
	bin := Need(t, "sipp", "sip-tester")
	if opts.LocalIP == "" || opts.LocalPort == 0 {
		t.Fatal("peertest: SippOptions.LocalIP and LocalPort are required")
	}
	scen := opts.ScenarioXML
	if opts.Scenario != "" {
		b, err := os.ReadFile(opts.Scenario)
		if err != nil {
			t.Fatalf("peertest: %v", err)
		}
		scen = string(b)
	}
	if scen == "" {
		t.Fatal("peertest: SippOptions needs Scenario or ScenarioXML")
	}
	name := opts.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(opts.Scenario), ".xml")
		if name == "." || name == "" {
			name = "sipp"
		}
	}
	name = regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(name, "_")

	dir := t.TempDir()
	keys := make([]string, 0, len(opts.Keys))
	for k := range opts.Keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		scen = strings.ReplaceAll(scen, "["+k+"]", opts.Keys[k])
	}
	scenPath := filepath.Join(dir, name+".xml")
	if err := os.WriteFile(scenPath, []byte(scen), 0o644); err != nil {
		t.Fatalf("peertest: %v", err)
	}
	res := &SippResult{
		Dir:          dir,
		MessagesPath: filepath.Join(dir, name+"_messages.log"),
		ErrorsPath:   filepath.Join(dir, name+"_errors.log"),
		StatsPath:    filepath.Join(dir, name+"_stats.csv"),
		OutputPath:   filepath.Join(dir, name+"_output.log"),
	}

	transport := opts.Transport
	if transport == "" {
		transport = "u1"
	}
	calls := opts.Calls
	if calls == 0 {
		calls = 1
	}
	args := []string{bin, "-sf", scenPath}
	if opts.Remote != "" {
		args = append(args, opts.Remote)
	}
	args = append(args,
		"-i", opts.LocalIP, "-p", strconv.Itoa(opts.LocalPort),
		"-t", transport, "-m", strconv.Itoa(calls),
		"-nostdin",
		"-trace_err", "-error_file", res.ErrorsPath,
		"-trace_stat", "-stf", res.StatsPath, "-fd", "1",
		"-timeout", strconv.Itoa(int(opts.timeout().Seconds()))+"s", "-timeout_error",
	)
	if !opts.NoMessageTrace {
		args = append(args, "-trace_msg", "-message_file", res.MessagesPath)
	}
	if opts.TraceRTT {
		// sipp writes its samples every -rtt_freq of them, and not the
		// rest when it exits: every one for short runs, every 100 (the
		// last <100 lost) for load runs, where one write per sample would
		// cost sipp a system call per REGISTER.
		freq := 1
		if calls >= 1000 {
			freq = 100
		}
		args = append(args, "-trace_rtt", "-rtt_freq", strconv.Itoa(freq))
	}
	if opts.Service != "" {
		args = append(args, "-s", opts.Service)
	}
	if opts.Rate > 0 {
		args = append(args, "-r", strconv.FormatFloat(opts.Rate, 'f', -1, 64))
	}
	if opts.Limit > 0 {
		args = append(args, "-l", strconv.Itoa(opts.Limit))
	}
	if opts.Pause > 0 {
		args = append(args, "-d", strconv.FormatInt(opts.Pause.Milliseconds(), 10))
	}
	inf := opts.InjectionFile
	if opts.Injection != "" {
		inf = filepath.Join(dir, name+"_inject.csv")
		if err := os.WriteFile(inf, []byte(opts.Injection), 0o644); err != nil {
			t.Fatalf("peertest: %v", err)
		}
	}
	if inf != "" {
		args = append(args, "-inf", inf)
	}
	for _, k := range keys {
		args = append(args, "-key", k, opts.Keys[k])
	}
	args = append(args, opts.Args...)

	label := "sipp " + name
	s := &Sipp{res: res}
	s.proc = startProcess(t, label, dir, res.OutputPath, nil, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("peertest: %s: %s", label, strings.Join(args, " "))
			dumpFile(t, label+" errors", res.ErrorsPath)
			dumpFile(t, label+" messages", res.MessagesPath)
		}
	})

	proto := "udp"
	if strings.HasPrefix(transport, "t") {
		proto = "tcp"
	}
	local := net.JoinHostPort(opts.LocalIP, strconv.Itoa(opts.LocalPort))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitListening(ctx, s.proc, proto, local, 10*time.Second); err != nil && !s.proc.exited() {
		t.Fatalf("peertest: %s: %v", label, err)
	}
	return s
}

func (o SippOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 20 * time.Second
}

// Wait waits up to timeout for sipp to exit and returns its result; the
// error is non-nil if it had to be killed or did not exit 0.
func (s *Sipp) Wait(timeout time.Duration) (*SippResult, error) {
	select {
	case <-s.proc.done:
	case <-time.After(timeout):
		s.proc.stop(time.Second)
		s.collect()
		return s.res, fmt.Errorf("%s: still running after %v, killed", s.proc.name, timeout)
	}
	s.collect()
	if s.res.ExitCode != 0 {
		return s.res, fmt.Errorf("%s: exit code %d (%d successful, %d failed calls); see %s",
			s.proc.name, s.res.ExitCode, s.res.Successful, s.res.Failed, s.res.ErrorsPath)
	}
	return s.res, nil
}

// Stop ends sipp (SIGTERM, then SIGKILL) and returns what it left.
func (s *Sipp) Stop() *SippResult {
	s.proc.stop(2 * time.Second)
	s.collect()
	return s.res
}

// Result is the run's result so far: the counters of the last -trace_stat
// dump (sipp writes one a second), so a long run can be followed while it
// goes. Not safe to call concurrently with Wait or Stop.
func (s *Sipp) Result() *SippResult {
	s.collect()
	return s.res
}

func (s *Sipp) collect() {
	if s.proc.exited() {
		s.res.ExitCode = s.proc.exitCode()
		s.res.CPU = s.proc.cmd.ProcessState.UserTime() + s.proc.cmd.ProcessState.SystemTime()
	}
	s.res.Periods = ReadSippStats(s.res.StatsPath)
	s.res.Stats = nil
	if n := len(s.res.Periods); n > 0 {
		s.res.Stats = s.res.Periods[n-1]
	}
	s.res.Successful, _ = strconv.Atoi(s.res.Stats["SuccessfulCall(C)"])
	s.res.Failed, _ = strconv.Atoi(s.res.Stats["FailedCall(C)"])
}

// ReadSippStats reads sipp's -trace_stat CSV: a ';'-separated header, then
// one row per dump, each returned keyed by column name; the last row holds
// the cumulative counters. A missing file gives no rows.
func ReadSippStats(path string) []map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var (
		header []string
		rows   []map[string]string
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ";")
		if header == nil {
			header = f
			continue
		}
		if len(f) < 2 {
			continue
		}
		m := make(map[string]string, len(header))
		for i, h := range header {
			if i < len(f) && h != "" {
				m[h] = f[i]
			}
		}
		rows = append(rows, m)
	}
	return rows
}

// ResponseTimes reads the -trace_rtt file of a TraceRTT run: every
// response time sipp measured, in the order it wrote them. Its lines are
// "date_ms;response_time_ms;rtd_name" after a header.
func (r *SippResult) ResponseTimes() ([]time.Duration, error) {
	paths, err := filepath.Glob(filepath.Join(r.Dir, "*_rtt.csv"))
	if err != nil || len(paths) == 0 {
		return nil, fmt.Errorf("peertest: no -trace_rtt file in %s (%v)", r.Dir, err)
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		return nil, fmt.Errorf("peertest: %w", err)
	}
	return parseRTT(b), nil
}

// parseRTT reads a -trace_rtt file; lines that are not samples (the
// header) are skipped.
func parseRTT(b []byte) []time.Duration {
	var out []time.Duration
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ";")
		if len(f) < 2 {
			continue
		}
		ms, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out = append(out, time.Duration(ms*float64(time.Millisecond)))
	}
	return out
}
