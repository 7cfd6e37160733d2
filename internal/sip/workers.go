package sip

import (
	"sync"
	"time"
)

// workers runs jobs (REGISTER handlers) on goroutines that stay for the
// next job, the most recently idle one first, and ends the ones idle for
// longer than idleFor.
//
// A goroutine per REGISTER started on a small stack and grew it again
// for every one (about 6% of sipwake's CPU at 9,000 refreshes/s). Taking
// the most recently idle worker keeps the work on as few goroutines as
// the load needs: after a burst (a slow group commit holds every handler;
// 1,700 workers in the first second of 6,800 first registrations/s) the
// surplus stays idle and ends. Idle workers waiting on one channel are
// handed jobs in turn instead, so every worker of the burst stays in use;
// the garbage collector shrinks the stacks of the idle ones and each grows
// its stack again for its next job, which was 12% of sipwake's CPU in
// that flow (runtime.newstack and shrinkstack).
type workers struct {
	idleFor time.Duration

	mu      sync.Mutex
	idle    []*worker // by the time they went idle, the latest last
	stopped bool

	running sync.WaitGroup
	quit    chan struct{}
	once    sync.Once
}

// worker is one idle-or-busy goroutine; jobs hands it its next job, and
// closing it ends the worker.
type worker struct {
	jobs  chan func() // buffered 1
	since time.Time   // went idle, while in workers.idle
}

// newWorkers starts the pool's reaper, which ends idle workers every
// idleFor until stop.
func newWorkers(idleFor time.Duration) *workers {
	p := &workers{idleFor: idleFor, quit: make(chan struct{})}
	p.running.Go(p.reap)
	return p
}

// run runs job on the most recently idle worker, or on a new one when
// none is idle.
func (p *workers) run(job func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.jobs <- job
		return
	}
	p.mu.Unlock()
	w := &worker{jobs: make(chan func(), 1)}
	p.running.Go(func() { p.work(w, job) })
}

func (p *workers) work(w *worker, job func()) {
	for ok := true; ok; job, ok = <-w.jobs {
		job()
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		w.since = time.Now()
		p.idle = append(p.idle, w)
		p.mu.Unlock()
	}
}

// reap ends, every idleFor, the workers idle since the last time.
func (p *workers) reap() {
	t := time.NewTicker(p.idleFor)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.mu.Lock()
			n := 0
			for n < len(p.idle) && now.Sub(p.idle[n].since) >= p.idleFor {
				close(p.idle[n].jobs)
				n++
			}
			p.idle = append(p.idle[:0], p.idle[n:]...)
			p.mu.Unlock()
		case <-p.quit:
			return
		}
	}
}

// stop ends the idle workers and waits for the busy ones to finish their
// jobs.
func (p *workers) stop() {
	p.once.Do(func() {
		close(p.quit)
		p.mu.Lock()
		p.stopped = true
		for _, w := range p.idle {
			close(w.jobs)
		}
		p.idle = nil
		p.mu.Unlock()
	})
	p.running.Wait()
}
