package app

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/sipwake/sipwake/internal/config"
)

// cgroupLimitFiles hold a container's memory limit: cgroup v2, then v1.
var cgroupLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// runtimePlan is what ConfigureRuntime sets: 0 leaves a knob as it is.
type runtimePlan struct {
	MemoryLimit int64
	GCPercent   int
	LimitFrom   string
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
	return p
}

// ConfigureRuntime applies runtime.memory_limit and runtime.gc_percent to
// the Go runtime. They are process-wide: call it once, from main.
func ConfigureRuntime(cfg config.Runtime, log *slog.Logger) {
	p := planRuntime(cfg, os.Getenv, cgroupMemoryLimit(cgroupLimitFiles))
	if p.MemoryLimit > 0 {
		debug.SetMemoryLimit(p.MemoryLimit)
	}
	if p.GCPercent > 0 {
		debug.SetGCPercent(p.GCPercent)
	}
	limit := "none"
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		limit = strconv.FormatInt(l>>20, 10) + "MiB (" + p.LimitFrom + ")"
	}
	gc := "100 (Go's default)"
	switch {
	case p.GCPercent > 0:
		gc = strconv.Itoa(p.GCPercent)
	case os.Getenv("GOGC") != "":
		gc = os.Getenv("GOGC") + " (GOGC)"
	}
	log.Info("go runtime", "memory_limit", limit, "gc_percent", gc)
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
