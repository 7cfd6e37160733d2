package limit

import (
	"testing"
	"time"
)

func TestOneKeyLimitedOthersNot(t *testing.T) {
	now := time.Unix(0, 0)
	l := New[string](1, 3, func() time.Time { return now })
	for i := range 3 {
		if !l.Allow("flood") {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if l.Allow("flood") {
		t.Fatal("fourth request within the same instant allowed")
	}
	if !l.Allow("quiet") {
		t.Fatal("another key paid for the flood")
	}
	now = now.Add(time.Second)
	if !l.Allow("flood") {
		t.Fatal("token not refilled after a second")
	}
}

func TestIdleBucketsAreDropped(t *testing.T) {
	now := time.Unix(0, 0)
	l := New[int](10, 10, func() time.Time { return now })
	for k := range 1000 {
		l.Allow(k)
	}
	now = now.Add(2 * sweepEvery)
	l.Allow(-1)
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets kept after they went idle, want 1", n)
	}
}

func TestZeroRateAllowsEverything(t *testing.T) {
	l := New[int](0, 0, time.Now)
	for range 100 {
		if !l.Allow(1) {
			t.Fatal("disabled limit refused")
		}
	}
	var nilLimit *Keyed[int]
	if !nilLimit.Allow(1) {
		t.Fatal("nil limit refused")
	}
}
