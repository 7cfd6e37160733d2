package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// pushLog remembers when each call push reached the fake, by the Call-ID
// the push carries, so it can be set against the caller's INVITE send
// time from sipp's short-message trace.
type pushLog struct {
	mu sync.Mutex
	at map[string]time.Time
}

func newPushLog() *pushLog { return &pushLog{at: map[string]time.Time{}} }

// callPush reports the Call-ID of a call push ("" for any other kind).
func callPush(p pushtest.Push) string {
	var m struct {
		Kind   string `json:"kind"`
		CallID string `json:"call_id"`
	}
	if json.Unmarshal(p.Payload, &m) != nil || m.Kind != "call" {
		return ""
	}
	return m.CallID
}

func (l *pushLog) record(callID string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.at[callID]; !dup {
		l.at[callID] = at
	}
}

func (l *pushLog) snapshot() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]time.Time, len(l.at))
	for k, v := range l.at {
		out[k] = v
	}
	return out
}

// shortMsg is one line of a sipp -trace_shortmsg file (tab-separated:
// date, time, unix.micro, S|R, Call-ID, CSeq, first line).
type shortMsg struct {
	At                      time.Time
	Sent                    bool
	CallID, CSeq, FirstLine string
}

// readShortMsgs calls fn for each line of a -trace_shortmsg file.
func readShortMsgs(path string, fn func(shortMsg)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) < 7 || (fs[3] != "S" && fs[3] != "R") {
			continue
		}
		sec, err := strconv.ParseFloat(fs[2], 64)
		if err != nil {
			continue
		}
		fn(shortMsg{At: time.UnixMicro(int64(math.Round(sec * 1e6))), Sent: fs[3] == "S",
			CallID: fs[4], CSeq: fs[5], FirstLine: fs[6]})
	}
	return sc.Err()
}

// inviteSendTimes reads a sipp -trace_shortmsg file and returns, per
// Call-ID, when sipp first sent its INVITE.
func inviteSendTimes(path string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := readShortMsgs(path, func(m shortMsg) {
		if !m.Sent || !strings.HasPrefix(m.FirstLine, "INVITE ") {
			return
		}
		if _, seen := out[m.CallID]; !seen { // else a retransmission
			out[m.CallID] = m.At
		}
	})
	return out, err
}

// requestRoundTrips reads a sipp -trace_shortmsg file and returns, sorted,
// each request's round trip: its first send to the first final answer
// with its Call-ID and CSeq (retransmissions and 1xx in between).
func requestRoundTrips(path string) ([]time.Duration, error) {
	sent := map[[2]string]time.Time{}
	var out []time.Duration
	err := readShortMsgs(path, func(m shortMsg) {
		key := [2]string{m.CallID, m.CSeq}
		at, pending := sent[key]
		switch {
		case m.Sent && !pending && !strings.HasPrefix(m.FirstLine, "SIP/2.0 "):
			sent[key] = m.At
		case !m.Sent && pending && strings.HasPrefix(m.FirstLine, "SIP/2.0 ") && !strings.HasPrefix(m.FirstLine, "SIP/2.0 1"):
			out = append(out, m.At.Sub(at))
			delete(sent, key)
		}
	})
	slices.Sort(out)
	return out, err
}

// lags pairs INVITE send times with push arrival times by Call-ID.
func lags(sent, pushed map[string]time.Time) []time.Duration {
	var out []time.Duration
	for id, s := range sent {
		if p, ok := pushed[id]; ok {
			out = append(out, p.Sub(s))
		}
	}
	slices.Sort(out)
	return out
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// latencySummary is p50/p99/p999/max of one set of samples.
type latencySummary struct {
	N                    int
	P50, P99, P999, Max  time.Duration
	ShareWithin5ms       float64
	fromHistogram, exact bool
}

func summarize(sorted []time.Duration) latencySummary {
	s := latencySummary{N: len(sorted), exact: true}
	if len(sorted) == 0 {
		return s
	}
	s.P50, s.P99, s.P999, s.Max = quantile(sorted, .5), quantile(sorted, .99), quantile(sorted, .999), sorted[len(sorted)-1]
	within := 0
	for _, d := range sorted {
		if d <= 5*time.Millisecond {
			within++
		}
	}
	s.ShareWithin5ms = float64(within) / float64(len(sorted))
	return s
}

func (s latencySummary) String() string {
	if s.N == 0 {
		return "no samples"
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
	if s.fromHistogram {
		return fmt.Sprintf("n=%d p50 %s p99 %s p999 %s (bucket-interpolated), %.2f%% ≤ 5 ms",
			s.N, f(s.P50), f(s.P99), f(s.P999), 100*s.ShareWithin5ms)
	}
	return fmt.Sprintf("n=%d p50 %s p99 %s p999 %s max %s, %.2f%% ≤ 5 ms",
		s.N, f(s.P50), f(s.P99), f(s.P999), f(s.Max), 100*s.ShareWithin5ms)
}

// histogram is one snapshot of a Prometheus histogram: cumulative counts
// per upper bound.
type histogram struct {
	bounds []float64
	counts []uint64
	total  uint64
}

// gatherHistogram reads the histogram name from reg ("zero" if absent).
func gatherHistogram(reg prometheus.Gatherer, name string) histogram {
	fams, err := reg.Gather()
	if err != nil {
		return histogram{}
	}
	for _, f := range fams {
		if f.GetName() != name || len(f.GetMetric()) == 0 {
			continue
		}
		return fromDTO(f.GetMetric()[0].GetHistogram())
	}
	return histogram{}
}

func fromDTO(h *dto.Histogram) histogram {
	var out histogram
	for _, b := range h.GetBucket() {
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.counts = append(out.counts, b.GetCumulativeCount())
	}
	out.total = h.GetSampleCount()
	return out
}

// minus is what was observed between snapshot o and h.
func (h histogram) minus(o histogram) histogram {
	out := histogram{bounds: h.bounds, counts: make([]uint64, len(h.counts)), total: h.total - o.total}
	for i := range h.counts {
		var prev uint64
		if i < len(o.counts) {
			prev = o.counts[i]
		}
		out.counts[i] = h.counts[i] - prev
	}
	return out
}

// quantile interpolates linearly inside the bucket, as Prometheus's
// histogram_quantile does; beyond the last bound it answers that bound.
func (h histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := q * float64(h.total)
	lower, below := 0.0, uint64(0)
	for i, c := range h.counts {
		if float64(c) >= rank {
			inBucket := float64(c - below)
			frac := 1.0
			if inBucket > 0 {
				frac = (rank - float64(below)) / inBucket
			}
			return time.Duration((lower + frac*(h.bounds[i]-lower)) * float64(time.Second))
		}
		lower, below = h.bounds[i], c
	}
	return time.Duration(lower * float64(time.Second))
}

// within is the share of samples at or under bound seconds (a bucket
// bound, so exact).
func (h histogram) within(bound float64) float64 {
	if h.total == 0 {
		return 0
	}
	for i, b := range h.bounds {
		if b == bound {
			return float64(h.counts[i]) / float64(h.total)
		}
	}
	return math.NaN()
}

func (h histogram) summary() latencySummary {
	return latencySummary{N: int(h.total), P50: h.quantile(.5), P99: h.quantile(.99), P999: h.quantile(.999),
		ShareWithin5ms: h.within(.005), fromHistogram: true}
}

// gaugeValue reads a gauge or counter (summed over labels matching
// label, "" for all) from reg.
func gaugeValue(reg prometheus.Gatherer, name, label string) float64 {
	fams, err := reg.Gather()
	if err != nil {
		return math.NaN()
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == label }) {
				continue
			}
			switch {
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
