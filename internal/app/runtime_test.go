package app

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
)

func TestPlanRuntime(t *testing.T) {
	const cgroup, floor = 1 << 30, config.DefaultHeapFloor
	noEnv := func(string) string { return "" }
	env := func(k, v string) func(string) string {
		return func(name string) string {
			if name == k {
				return v
			}
			return ""
		}
	}
	for name, tc := range map[string]struct {
		cfg    config.Runtime
		env    func(string) string
		cgroup int64
		want   runtimePlan
	}{
		"nothing set, no container limit: Go's defaults": {env: noEnv, want: runtimePlan{HeapFloor: floor}},
		"container limit: 90% of it, GC at 400%": {env: noEnv, cgroup: cgroup,
			want: runtimePlan{MemoryLimit: cgroup / 10 * 9, GCPercent: 400, LimitFrom: "90% of the container's memory limit", HeapFloor: floor}},
		"config wins over the container": {cfg: config.Runtime{MemoryLimit: "192MiB"}, env: noEnv, cgroup: cgroup,
			want: runtimePlan{MemoryLimit: 192 << 20, GCPercent: 400, LimitFrom: "runtime.memory_limit", HeapFloor: floor}},
		"GOMEMLIMIT wins over the container and is left to Go": {env: env("GOMEMLIMIT", "300MiB"), cgroup: cgroup,
			want: runtimePlan{GCPercent: 400, LimitFrom: "GOMEMLIMIT", HeapFloor: floor}},
		"GOGC is left to Go": {env: env("GOGC", "150"), cgroup: cgroup,
			want: runtimePlan{MemoryLimit: cgroup / 10 * 9, LimitFrom: "90% of the container's memory limit", HeapFloor: floor}},
		"gc_percent wins over everything": {cfg: config.Runtime{GCPercent: 250}, env: env("GOGC", "150"),
			want: runtimePlan{GCPercent: 250, HeapFloor: floor}},
		"heap floor off": {cfg: config.Runtime{HeapFloor: "0"}, env: noEnv, want: runtimePlan{}},
		"heap floor set": {cfg: config.Runtime{HeapFloor: "64MiB"}, env: noEnv, want: runtimePlan{HeapFloor: 64 << 20}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := planRuntime(tc.cfg, tc.env, tc.cgroup); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPaceFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, floor uint64
		base, want  int
	}{
		{20 * mib, 128 * mib, 100, 540},   // grows to the floor
		{64 * mib, 128 * mib, 100, 100},   // base reaches the floor by itself
		{100 * mib, 128 * mib, 100, 100},  // never below base
		{200 * mib, 128 * mib, 400, 400},  // above the floor: base
		{10 * mib, 128 * mib, 1000, 1180}, // base counts too
		{1024, 128 * mib, 100, 10000},     // at most 10000
		{0, 128 * mib, 100, 100},          // before the first collection
		{20 * mib, 128 * mib, -1, -1},     // collection off stays off
	} {
		if got := paceFor(tc.live, tc.floor, tc.base); got != tc.want {
			t.Errorf("paceFor(%d MiB live, %d MiB floor, %d) = %d, want %d", tc.live/mib, tc.floor/mib, tc.base, got, tc.want)
		}
	}
}

// The floor retunes the real collector after a collection, and lets go of
// it when stopped.
func TestHeapFloorTunesTheCollector(t *testing.T) {
	base := gcPercent()
	defer debug.SetGCPercent(base)
	h := keepHeapFloor(1<<40, base) // far above any live heap here
	for i := 0; gcPercent() == base; i++ {
		if i == 100 {
			t.Fatalf("GC percent still %d after 100 collections", base)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := gcPercent(); got != 10000 {
		t.Fatalf("GC percent %d under a 1 TiB floor, want 10000", got)
	}
	h.on.Store(false)
	runtime.GC()
}

func TestCgroupMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	for name, tc := range map[string]struct {
		files []string
		want  int64
	}{
		"v2 limit":            {[]string{write("v2", "536870912\n")}, 512 << 20},
		"v2 max":              {[]string{write("v2max", "max\n"), write("v1", "1073741824\n")}, 0},
		"v1 after missing v2": {[]string{missing, write("v1b", "1073741824\n")}, 1 << 30},
		"v1 unlimited":        {[]string{missing, write("v1u", "9223372036854771712\n")}, 0},
		"no cgroup files":     {[]string{missing}, 0},
	} {
		if got := cgroupMemoryLimit(tc.files); got != tc.want {
			t.Errorf("%s: got %d, want %d", name, got, tc.want)
		}
	}
}
