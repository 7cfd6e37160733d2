// Package cluster connects sipwake nodes that share a Redis store: it
// carries "binding refreshed" between them over Redis pub/sub, so a call
// parked on one node is released when its device re-registers through
// another. Only binding ids travel (HMACs: no AOR, token or address). It
// knows nothing of SIP.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

func parseRefresh(s string) (relay.Refresh, error) {
	waiter, record, _ := strings.Cut(s, ".")
	w, err := store.ParseID(waiter)
	if err != nil {
		return relay.Refresh{}, err
	}
	r, err := store.ParseID(record)
	if err != nil {
		return relay.Refresh{}, err
	}
	return relay.Refresh{Waiter: w, Record: r}, nil
}

// Bus is Redis pub/sub on one channel per deployment (prefix).
type Bus struct {
	client  redis.UniversalClient
	channel string
	log     *slog.Logger
}

// New carries refreshes over client (the Redis store's connection), on a
// channel named after the deployment's key prefix.
func New(client redis.UniversalClient, prefix string, log *slog.Logger) *Bus {
	return &Bus{client: client, channel: prefix + ":refreshed", log: log}
}

// Publish tells every node that a binding was refreshed.
func (b *Bus) Publish(ctx context.Context, r relay.Refresh) error {
	if err := b.client.Publish(ctx, b.channel, r.Waiter.String()+"."+r.Record.String()).Err(); err != nil {
		return fmt.Errorf("cluster: publish: %w", err)
	}
	return nil
}

// Run delivers every published id to refreshed until ctx ends. It returns
// once the subscription is confirmed, and keeps delivering in the
// background (go-redis re-subscribes after a lost connection).
func (b *Bus) Run(ctx context.Context, refreshed func(context.Context, relay.Refresh)) error {
	sub := b.client.Subscribe(ctx, b.channel)
	if _, err := sub.Receive(ctx); err != nil {
		_ = sub.Close()
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	go func() {
		defer func() { _ = sub.Close() }()
		ch := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				r, err := parseRefresh(m.Payload)
				if err != nil {
					b.log.Warn("cluster: message that is no refresh ignored")
					continue
				}
				refreshed(ctx, r)
			}
		}
	}()
	return nil
}
