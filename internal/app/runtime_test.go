package app

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sipwake/sipwake/internal/config"
)

func TestPlanRuntime(t *testing.T) {
	const cgroup = 1 << 30
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
		"nothing set, no container limit: Go's defaults": {env: noEnv, want: runtimePlan{}},
		"container limit: 90% of it, GC at 400%": {env: noEnv, cgroup: cgroup,
			want: runtimePlan{MemoryLimit: cgroup / 10 * 9, GCPercent: 400, LimitFrom: "90% of the container's memory limit"}},
		"config wins over the container": {cfg: config.Runtime{MemoryLimit: "192MiB"}, env: noEnv, cgroup: cgroup,
			want: runtimePlan{MemoryLimit: 192 << 20, GCPercent: 400, LimitFrom: "runtime.memory_limit"}},
		"GOMEMLIMIT wins over the container and is left to Go": {env: env("GOMEMLIMIT", "300MiB"), cgroup: cgroup,
			want: runtimePlan{GCPercent: 400, LimitFrom: "GOMEMLIMIT"}},
		"GOGC is left to Go": {env: env("GOGC", "150"), cgroup: cgroup,
			want: runtimePlan{MemoryLimit: cgroup / 10 * 9, LimitFrom: "90% of the container's memory limit"}},
		"gc_percent wins over everything": {cfg: config.Runtime{GCPercent: 250}, env: env("GOGC", "150"),
			want: runtimePlan{GCPercent: 250}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := planRuntime(tc.cfg, tc.env, tc.cgroup); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
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
