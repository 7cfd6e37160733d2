package handover_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
)

// BenchmarkHand measures one handover against Kamailio: REGISTER, 401,
// REGISTER with digest, 200, sealed store write (fsync). Run in parallel
// (-cpu sets the callers) it shows throughput with many apps posting.
// Every op adds a contact to the one AOR alice, and Kamailio lists them
// all in each 200: keep -benchtime at a few hundred ops (at ~500 the 200
// outgrows a UDP datagram), e.g. -benchtime 200x.
func BenchmarkHand(b *testing.B) {
	env := handovertest.Start(b)
	k := env.Registrations(b, handover.Options{})
	pass := handovertest.Users()["alice"]
	var n atomic.Int64
	ctx := context.Background()
	var once sync.Once
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("acc-%d", n.Add(1))
			if _, _, err := k.Hand(ctx, env.Account("bench", id, "alice", pass, 3600), ttl); err != nil {
				once.Do(func() { b.Error(err) })
			}
		}
	})
}
