package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/store"
)

// Leases give each handed-over account to one node at a time: a Redis key
// per account holding the node's name, with a TTL the holder renews.
type Leases struct {
	client redis.UniversalClient
	prefix string
	node   string
}

// NewLeases keeps leases for node under prefix.
func NewLeases(client redis.UniversalClient, prefix, node string) *Leases {
	return &Leases{client: client, prefix: prefix, node: node}
}

// holdScript takes a free lease or extends our own; otherwise it answers
// how many milliseconds the other node's lease has left.
var holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return -1
end
return redis.call('PTTL', KEYS[1])`)

// releaseScript gives a lease back only if it is ours.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

func (l *Leases) key(id store.ID) string { return l.prefix + ":lease:" + id.String() }

// Hold takes or extends this node's lease on id for ttl.
func (l *Leases) Hold(ctx context.Context, id store.ID, ttl time.Duration) (bool, time.Duration, error) {
	left, err := holdScript.Run(ctx, l.client, []string{l.key(id)}, l.node, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, 0, fmt.Errorf("cluster: lease: %w", err)
	}
	if left == -1 {
		return true, 0, nil
	}
	return false, time.Duration(max(left, 0)) * time.Millisecond, nil
}

// Release gives this node's lease on id back.
func (l *Leases) Release(ctx context.Context, id store.ID) error {
	if err := releaseScript.Run(ctx, l.client, []string{l.key(id)}, l.node).Err(); err != nil {
		return fmt.Errorf("cluster: release lease: %w", err)
	}
	return nil
}
