package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuUse is the CPU time (user+system) each hop of a set-up spent on one
// run: per registration, it shows what a hop costs, which REGISTER/s on two
// shared cores cannot.
type cpuUse struct {
	Sipp, Kamailio, Sipwake, Harness time.Duration
	// Hop and Registrar are the hop's and the registrar's share, when the
	// run's set-up says which groups (or the harness) they are.
	Hop, Registrar time.Duration
	// Groups is every kamailio and sipwake process' share by process
	// group: peertest and the harness start each peer in a group of its
	// own, so a group is one hop (a Kamailio with all its workers).
	Groups map[int]time.Duration
}

// perCall renders u per completed call, in µs.
func (u cpuUse) perCall(calls int) string {
	if calls <= 0 {
		return "-"
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(calls) }
	return fmt.Sprintf("sipp %.0f µs, Kamailio %.0f µs, sipwake process %.0f µs, harness %.0f µs",
		us(u.Sipp), us(u.Kamailio), us(u.Sipwake), us(u.Harness))
}

// cpuMeter measures the long-lived peers (every kamailio and sipwake
// process) from /proc and the harness (with an in-process sipwake) from
// getrusage, between start and stop; sipp reports its own.
type cpuMeter struct {
	procs   map[int]procCPU
	harness time.Duration
}

type procCPU struct {
	comm string
	pgid int
	cpu  time.Duration
}

func startCPU() cpuMeter { return cpuMeter{procs: peerCPU(), harness: selfCPU()} }

func (m cpuMeter) stop(sipp time.Duration) cpuUse {
	u := cpuUse{Sipp: sipp, Harness: selfCPU() - m.harness, Groups: map[int]time.Duration{}}
	for pid, now := range peerCPU() {
		d := now.cpu - m.procs[pid].cpu // a process started since counts from 0
		u.Groups[now.pgid] += d
		switch now.comm {
		case "kamailio":
			u.Kamailio += d
		case "sipwake":
			u.Sipwake += d
		}
	}
	return u
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTick = 100

func peerCPU() map[int]procCPU {
	out := map[int]procCPU{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open {
			continue
		}
		comm := st[open+1 : end]
		if comm != "kamailio" && comm != "sipwake" {
			continue
		}
		f := strings.Fields(st[end+1:])
		if len(f) < 13 {
			continue
		}
		// After the comm: state ppid pgrp …, utime and stime 12th and 13th.
		pgid, _ := strconv.Atoi(f[2])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = procCPU{comm: comm, pgid: pgid, cpu: time.Duration(utime+stime) * time.Second / clockTick}
	}
	return out
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
