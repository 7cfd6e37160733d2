package handover

import (
	"container/heap"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// entry is one scheduled REGISTER. An account's later schedule supersedes
// earlier entries through gen, so nothing is removed from the middle of
// the heap.
type entry struct {
	id  store.ID
	due time.Time
	gen uint64
}

// schedule is a min-heap of entries by due time.
type schedule struct{ h entryHeap }

func (s *schedule) Len() int     { return len(s.h) }
func (s *schedule) push(e entry) { heap.Push(&s.h, e) }
func (s *schedule) peek() entry  { return s.h[0] }
func (s *schedule) pop() entry   { return heap.Pop(&s.h).(entry) }

type entryHeap []entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
