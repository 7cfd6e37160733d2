package app

import (
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sipwake/sipwake/internal/config"
)

// cgroupLimitFiles hold a container's memory limit: cgroup v2, then v1.
var cgroupLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// runtimePlan is what ConfigureRuntime sets: 0 leaves a knob as it is.
type runtimePlan struct {
	MemoryLimit int64
	GCPercent   int
	LimitFrom   string
	HeapFloor   int64
}

// planRuntime decides the memory limit and GC percent: the config first,
// then the GOMEMLIMIT/GOGC environment (already applied by Go), then the
// container's limit; GC runs at 400% whenever a limit bounds it.
func planRuntime(cfg config.Runtime, env func(string) string, cgroup int64) runtimePlan {
	var p runtimePlan
	p.MemoryLimit, _ = cfg.MemoryLimitBytes() // validated with the config
	switch {
	case p.MemoryLimit > 0:
		p.LimitFrom = "runtime.memory_limit"
	case env("GOMEMLIMIT") != "":
		p.LimitFrom = "GOMEMLIMIT"
	case cgroup > 0:
		p.MemoryLimit, p.LimitFrom = cgroup/10*9, "90% of the container's memory limit"
	}
	p.GCPercent = cfg.GCPercent
	if p.GCPercent == 0 && env("GOGC") == "" && p.LimitFrom != "" {
		p.GCPercent = 400
	}
	p.HeapFloor, _ = cfg.HeapFloorBytes() // validated with the config
	return p
}

// ConfigureRuntime applies runtime.memory_limit, runtime.gc_percent and
// runtime.heap_floor to the Go runtime. They are process-wide: call it
// once, from main.
func ConfigureRuntime(cfg config.Runtime, log *slog.Logger) {
	p := planRuntime(cfg, os.Getenv, cgroupMemoryLimit(cgroupLimitFiles))
	if p.MemoryLimit > 0 {
		debug.SetMemoryLimit(p.MemoryLimit)
	}
	if p.GCPercent > 0 {
		debug.SetGCPercent(p.GCPercent)
	}
	limit, floor := "none", p.HeapFloor
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		limit = strconv.FormatInt(l>>20, 10) + "MiB (" + p.LimitFrom + ")"
		floor = min(floor, l/2) // room above it for the limit to work in
	}
	gc := "100 (Go's default)"
	switch {
	case p.GCPercent > 0:
		gc = strconv.Itoa(p.GCPercent)
	case os.Getenv("GOGC") != "":
		gc = os.Getenv("GOGC") + " (GOGC)"
	}
	if base := gcPercent(); floor > 0 && base > 0 {
		keepHeapFloor(uint64(floor), base)
	} else {
		floor = 0
	}
	log.Info("go runtime", "memory_limit", limit, "gc_percent", gc, "heap_floor_mib", floor>>20)
}

// gcPercent is the collector's pace as Go runs it now (GOGC); -1 is off.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// heapFloor keeps the collector from running before the heap reaches
// floor: after each collection it sets the pace that lets the live heap
// grow to floor, or base, the configured pace, when that lets it grow
// further. sipwake's live heap is small (a few MiB to tens of MiB) and
// churned by every SIP message, so at Go's pace alone it collects several
// times a second under load; with a floor it collects a fraction as often
// for a heap of at most floor while the live heap is below floor/2, and at
// base above that.
type heapFloor struct {
	floor uint64
	base  int
	live  []metrics.Sample
	pace  int         // the percent last set, 0 before
	on    atomic.Bool // false stops it at the next collection
}

// gcSentinel dies in every collection: its cleanup is how the floor
// learns one happened. The pointer keeps it out of Go's tiny allocator,
// whose blocks can outlive their objects.
type gcSentinel struct{ _ *byte }

func keepHeapFloor(floor uint64, base int) *heapFloor {
	h := &heapFloor{floor: floor, base: base, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	h.on.Store(true)
	h.arm()
	return h
}

// arm has the floor retuned after the next collection.
func (h *heapFloor) arm() {
	runtime.AddCleanup(new(gcSentinel), func(h *heapFloor) {
		if h.on.Load() {
			h.tune()
			h.arm()
		}
	}, h)
}

// tune sets the pace for the live heap the last collection left.
func (h *heapFloor) tune() {
	metrics.Read(h.live)
	if p := paceFor(h.live[0].Value.Uint64(), h.floor, h.base); p != h.pace {
		debug.SetGCPercent(p)
		h.pace = p
	}
}

// paceFor is the GC percent that lets a live heap grow to floor before the
// next collection, never below base and at most 10000 (GOGC's range in the
// config). base ≤ 0 (collection off) is left alone.
func paceFor(live, floor uint64, base int) int {
	if live == 0 || base <= 0 || live >= floor {
		return base
	}
	return max(base, int(min((floor-live)*100/live, 10000)))
}

// cgroupMemoryLimit reads the first of files that states a memory limit,
// in bytes; 0 when there is none ("max", or v1's near-2^63 "unlimited").
func cgroupMemoryLimit(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n > 1<<50 {
			return 0
		}
		return n
	}
	return 0
}
