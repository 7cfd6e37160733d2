package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sipwake/sipwake/internal/configerr"
)

// Runtime tunes the Go runtime sipwake runs on: how much memory it may
// use and how often its garbage collector runs.
type Runtime struct {
	// MemoryLimit is a soft limit on the process' memory (Go's GOMEMLIMIT),
	// e.g. "256MiB": near it the collector works harder instead of letting
	// garbage pile up. Empty: GOMEMLIMIT if set, else 90% of the container's
	// memory limit (cgroup) when it has one, else none.
	MemoryLimit string `yaml:"memory_limit"`
	// GCPercent is how much garbage may pile up between collections, in
	// percent of the live heap (Go's GOGC). 0: 400 under a memory limit
	// (fewer collections, a shorter latency tail, bounded by the limit),
	// else GOGC if set, else Go's 100.
	GCPercent int `yaml:"gc_percent"`
	// HeapFloor is the smallest heap the collector lets grow before it
	// runs, e.g. "64MiB": while the live heap is small, collections wait
	// for this much instead of for GCPercent more, and never come sooner
	// than GCPercent says. Empty: 64MiB (capped at half the memory limit);
	// "0": off, Go's pace alone.
	HeapFloor string `yaml:"heap_floor"`
}

// DefaultHeapFloor is runtime.heap_floor when it is empty.
const DefaultHeapFloor = 64 << 20

// HeapFloorBytes is runtime.heap_floor in bytes: DefaultHeapFloor when
// empty, 0 when off.
func (r Runtime) HeapFloorBytes() (int64, error) {
	if strings.TrimSpace(r.HeapFloor) == "" {
		return DefaultHeapFloor, nil
	}
	return ParseBytes(r.HeapFloor)
}

// Bounds of runtime.memory_limit: below 64 MiB sipwake would spend its time
// collecting; above 1 TiB is a typo.
const (
	minMemoryLimit = 64 << 20
	maxMemoryLimit = 1 << 40
)

// MemoryLimitBytes is runtime.memory_limit in bytes, 0 when empty.
func (r Runtime) MemoryLimitBytes() (int64, error) {
	return ParseBytes(r.MemoryLimit)
}

// ParseBytes reads a size such as 512MiB, 1GiB, 300MB or 1048576 (bytes);
// "" is 0.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxMemoryLimit/mult {
		return 0, fmt.Errorf("not a size")
	}
	return n * mult, nil
}

func (r Runtime) validate(problems *configerr.List) {
	if n, err := r.MemoryLimitBytes(); err != nil || (n != 0 && n < minMemoryLimit) {
		problems.Bad("runtime.memory_limit", r.MemoryLimit, "a size from 64MiB to 1TiB such as 256MiB or 2GiB, or empty")
	}
	if _, err := r.HeapFloorBytes(); err != nil {
		problems.Bad("runtime.heap_floor", r.HeapFloor, "a size such as 128MiB, 0 for off, or empty for 64MiB")
	}
	if p := r.GCPercent; p < 0 || p > 10000 {
		problems.Bad("runtime.gc_percent", p, "0 for the default, or 1 to 10000")
	}
}
