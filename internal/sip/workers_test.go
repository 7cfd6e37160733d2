package sip

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// busy runs n jobs on p at once and returns when all have ended, so that p
// has n idle workers.
func busy(p *workers, n int) {
	var started, done sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	done.Add(n)
	for range n {
		p.run(func() { started.Done(); <-release; done.Done() })
	}
	started.Wait()
	close(release)
	done.Wait()
}

// idleWorkers is a copy of p's idle list, waiting (a short while) for it
// to hold want.
func idleWorkers(t *testing.T, p *workers, want int) []*worker {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		idle := slices.Clone(p.idle)
		p.mu.Unlock()
		if len(idle) == want || time.Now().After(deadline) {
			if len(idle) != want {
				t.Fatalf("%d idle workers, want %d", len(idle), want)
			}
			return idle
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkersTakeTheLatestIdle: after a burst, one job at a time runs on
// the worker that went idle last, and the rest of the burst's workers stay
// untouched (idle since the burst), so they end.
func TestWorkersTakeTheLatestIdle(t *testing.T) {
	p := newWorkers(time.Hour)
	defer p.stop()
	busy(p, 8)
	before := idleWorkers(t, p, 8)
	for range 100 {
		ran := make(chan struct{})
		p.run(func() { close(ran) })
		<-ran
		idleWorkers(t, p, 8) // back in the list before the next job
	}
	after := idleWorkers(t, p, 8)
	if !slices.Equal(before[:7], after[:7]) {
		t.Fatal("a job ran on a worker other than the latest idle one")
	}
	for i, w := range after[:7] {
		if !w.since.Equal(before[i].since) {
			t.Fatalf("worker %d went idle again at %v (burst ended %v)", i, w.since, before[i].since)
		}
	}
}

// TestWorkersEndWhenIdle: workers idle for idleFor end; a job after that
// starts a new one.
func TestWorkersEndWhenIdle(t *testing.T) {
	p := newWorkers(10 * time.Millisecond)
	defer p.stop()
	busy(p, 5)
	idleWorkers(t, p, 0)
	ran := make(chan struct{})
	p.run(func() { close(ran) })
	<-ran
	idleWorkers(t, p, 1)
}

// TestWorkersStopWaitsForBusyJobs: stop ends the idle workers and returns
// once the busy ones finished their jobs; those do not go idle again.
func TestWorkersStopWaitsForBusyJobs(t *testing.T) {
	p := newWorkers(time.Hour)
	busy(p, 3)
	release, started := make(chan struct{}), make(chan struct{})
	p.run(func() { close(started); <-release })
	<-started
	stopped := make(chan struct{})
	go func() { p.stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while a job was running")
	case <-time.After(50 * time.Millisecond):
	}
	idleWorkers(t, p, 0) // the idle ones ended at once
	close(release)
	<-stopped
	idleWorkers(t, p, 0)
}
