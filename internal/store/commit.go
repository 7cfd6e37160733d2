package store

import (
	"errors"
	"runtime"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// groupCommit shares write transactions (and their fsync) between
// concurrent writers, leader/follower style: a writer that finds no commit
// running commits at once, alone; writers that arrive while a commit runs
// queue, and when it ends one of them commits the whole queue in one
// transaction (after a short linger when writes stream in). So an idle
// store adds no delay, and a busy one does one fsync per group instead of
// one per write.
type groupCommit struct {
	mu      sync.Mutex
	running bool       // a leader is committing
	queue   []*writeOp // ops waiting for the next commit
	commits int64      // group transactions committed (writes/commits = group size)
	last    time.Time  // when the last commit ended
	size    int        // writes the last commit carried
	// prepare runs first in every group's transaction.
	prepare func(*bolt.Tx) error
}

// A leader that finds writers contending (the last commit, ended within
// busyWindow, carried several writes) waits up to groupLinger until twice
// as many writes are queued as the last commit carried, so groups grow
// while writes stream in. On this project's VM an fdatasync costs ~200 µs
// of CPU whatever it carries (bbolt does two per commit): a 2 ms linger
// made a third fewer commits at 2,000 REGISTER/s than none (3,550 → 2,420
// in `bench/run.sh profile 2000`) and sipwake's CPU per registration ~10%
// less; 5 ms took it ~7% lower again (`bench/run.sh profile-process 2000`,
// relative to Kamailio's CPU in the same run: 1.71–1.79× against
// 1.83–2.00×), for at most 5 ms more on a 200 OK under load. 10 ms took
// sipwake's CPU per first registration from 102–108 µs to 98–104 µs at
// 6,800/s (four alternating runs each of `-register.rate 6800` in the
// first flow: a commit's two fdatasyncs and its meta and freelist pages
// are paid per commit, and ~120 commits/s became fewer), for 5 ms more
// again. The price is paid by a fixed set of writers in a loop, which
// waits out the linger each round (`-bench BoltPutDurable`, 16 writers:
// 2,755 records/s at 2 ms, 1,885 at 5 ms; on 2026-12-06, 5 ms against
// 10 ms, 16 writers 2,230–2,300 against 1,320 records/s and 128 writers
// 13,500 against 8,800–9,100, one writer alone unchanged); sipwake's
// writers are REGISTERs, which arrive independently. An idle store, or
// one writer alone, commits at once.
const (
	busyWindow  = 5 * time.Millisecond
	groupLinger = 10 * time.Millisecond
	lingerStep  = 100 * time.Microsecond
)

type writeOp struct {
	fn   func(*bolt.Tx) error
	err  error
	done chan bool // true: the op is done; false: its writer leads the next commit
}

// failedOp says which op of a group failed, so the others are retried
// without it.
type failedOp struct {
	op  *writeOp
	err error
}

func (f *failedOp) Error() string { return f.err.Error() }

// update runs fn in a write transaction on db, shared with the writers
// that queue meanwhile. fn may run more than once (when another op in its
// group fails), so it must be idempotent; a failing fn fails only its own
// writer.
func (g *groupCommit) update(db *bolt.DB, fn func(*bolt.Tx) error) error {
	op := &writeOp{fn: fn, done: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, op)
	if g.running {
		g.mu.Unlock()
		if <-op.done {
			return op.err
		}
		// This writer leads the next group. Under load the writers of the
		// group just committed are about to queue again: let them.
		runtime.Gosched()
		g.mu.Lock()
	}
	g.running = true
	if g.size > 1 && time.Since(g.last) < busyWindow {
		// Writes are streaming in (a REGISTER burst): the ones right
		// behind this share its fsync instead of each paying one.
		for end := time.Now().Add(groupLinger); len(g.queue) < 2*g.size && time.Now().Before(end); {
			g.mu.Unlock()
			time.Sleep(lingerStep)
			g.mu.Lock()
		}
	}
	group := g.queue
	g.queue = nil
	g.mu.Unlock()

	g.commit(db, group)

	g.mu.Lock()
	g.last, g.size = time.Now(), len(group)
	if len(g.queue) > 0 {
		g.queue[0].done <- false // hand over; g.running stays true
	} else {
		g.running = false
	}
	g.mu.Unlock()
	return op.err
}

// commit runs group in one transaction. An op that fails is taken out and
// run alone, and the rest committed again without it.
func (g *groupCommit) commit(db *bolt.DB, group []*writeOp) {
	for len(group) > 0 {
		err := g.write(db, func(tx *bolt.Tx) error {
			for _, op := range group {
				if err := op.fn(tx); err != nil {
					return &failedOp{op: op, err: err}
				}
			}
			return nil
		})
		var failed *failedOp
		if !errors.As(err, &failed) {
			g.mu.Lock()
			g.commits++
			g.mu.Unlock()
			g.finish(group, err)
			return
		}
		if len(group) == 1 {
			g.finish(group, failed.err)
			return
		}
		g.finish([]*writeOp{failed.op}, g.write(db, failed.op.fn))
		rest := make([]*writeOp, 0, len(group)-1)
		for _, op := range group {
			if op != failed.op {
				rest = append(rest, op)
			}
		}
		group = rest
	}
}

// write runs fn in a write transaction, after prepare: the groups'
// transactions, and writes that cannot be grouped (Rotate's, whose fn is
// not idempotent).
func (g *groupCommit) write(db *bolt.DB, fn func(*bolt.Tx) error) error {
	return db.Update(func(tx *bolt.Tx) error {
		if g.prepare != nil {
			if err := g.prepare(tx); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// finish hands each op its result and releases its writer (the leader's
// own op too: its channel is buffered).
func (g *groupCommit) finish(group []*writeOp, err error) {
	for _, op := range group {
		op.err = err
		op.done <- true
	}
}
