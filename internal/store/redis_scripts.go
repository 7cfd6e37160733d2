package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// redisScripts are the store's Lua scripts (each keeps its SHA for EVALSHA).
type redisScripts struct {
	init, put, unlinkMoved, erase, deleteAOR, prune, swap, swapMeta *redis.Script
}

func newRedisScripts() redisScripts {
	return redisScripts{
		init:        redis.NewScript(redisInitLua),
		put:         redis.NewScript(redisPutLua),
		unlinkMoved: redis.NewScript(redisUnlinkMovedLua),
		erase:       redis.NewScript(redisEraseLua),
		deleteAOR:   redis.NewScript(redisDeleteAORLua),
		prune:       redis.NewScript(redisPruneLua),
		swap:        redis.NewScript(redisSwapLua),
		swapMeta:    redis.NewScript(redisSwapMetaLua),
	}
}

// The scripts' source. Every key a script touches is passed in KEYS and
// shares the store's hash tag, so they run unchanged on a Cluster. A record value's
// header starts with the format (1 or 2), the expiry, and the AOR hash at
// bytes 10..29 in Lua (see header.go).
const (
	// redisInitLua creates the meta hash unless another node did first, and
	// returns {format, sealed index key, created}.
	redisInitLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  local m = redis.call('HMGET', KEYS[1], 'format', 'index-key')
  return {m[1], m[2], 0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('records but no meta: refusing to guess an index key')
end
redis.call('HSET', KEYS[1], 'format', ARGV[1], 'index-key', ARGV[2])
return {ARGV[1], ARGV[2], 1}`

	// redisPutLua: KEYS rec, ttl, aor, due, acct; ARGV id, value, score (ms),
	// hard expiry (ms), due score (ms, "" for none), account ("1" or "").
	// Returns the previous value's AOR hash if it differs, else nil.
	redisPutLua = `
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
local at = redis.call('PEXPIRETIME', KEYS[3])
if at == -1 or at < tonumber(ARGV[4]) then
  redis.call('PEXPIREAT', KEYS[3], ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
if ARGV[6] ~= '' then
  redis.call('SADD', KEYS[5], ARGV[1])
else
  redis.call('SREM', KEYS[5], ARGV[1])
end
local f = old and string.byte(old, 1)
if old and #old >= 29 and (f == 1 or f == 2) and string.sub(old, 10, 29) ~= string.sub(ARGV[2], 10, 29) then
  return string.sub(old, 10, 29)
end
return false`

	// redisUnlinkMovedLua: KEYS rec, old aor; ARGV id, old AOR hash. Drops id
	// from the old AOR's set unless the record is back in that AOR.
	redisUnlinkMovedLua = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 10, 29) == ARGV[2] then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1`

	// redisEraseLua: KEYS rec, ttl, due, acct[, aor]; ARGV id, expected value
	// ("" for absent), max score ("" for any). Erases the record and its
	// index entries if the value is unchanged and, with a max score, the
	// record is still in the TTL index at or below it. Returns 1 if this
	// call erased it, 0 if it is not (or no longer) due, -1 if the value
	// changed.
	redisEraseLua = `
if ARGV[3] ~= '' then
  local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not s or tonumber(s) > tonumber(ARGV[3]) then return 0 end
end
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[2] then return -1 end
if cur then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
if KEYS[5] then redis.call('SREM', KEYS[5], ARGV[1]) end
return 1`

	// redisDeleteAORLua: KEYS aor, ttl, due, acct, rec...; ARGV id... Erases
	// each record and its index entries; returns their values (nil where
	// absent).
	redisDeleteAORLua = `
local out = {}
for i = 5, #KEYS do
  local id = ARGV[i - 4]
  local v = redis.call('GET', KEYS[i])
  if v then redis.call('DEL', KEYS[i]) end
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('SREM', KEYS[4], id)
  redis.call('SREM', KEYS[1], id)
  out[#out + 1] = v
end
return out`

	// redisPruneLua: KEYS aor, rec...; ARGV id... Drops from the AOR's set the
	// ids whose record Redis has expired.
	redisPruneLua = `
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('SREM', KEYS[1], ARGV[i - 1]) end
end
return 0`

	// redisSwapLua: KEYS rec; ARGV old, new. Replaces an unchanged value,
	// keeping its expiry.
	redisSwapLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1`

	// redisSwapMetaLua: KEYS meta; ARGV old, new sealed index key.
	redisSwapMetaLua = `
if redis.call('HGET', KEYS[1], 'index-key') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'index-key', ARGV[2])
return 1`
)

// scriptCall is one run of a script: its KEYS and ARGV.
type scriptCall struct {
	keys []string
	args []any
}

// runPipelined runs sc once per call in one round trip and returns each
// call's integer reply (0 for a call that failed) and the first error, so
// a caller can still account for the calls that did run. A Redis that lost
// its script cache (restart, fail-over) answers NOSCRIPT; those calls are
// re-run one by one, which loads the script.
func (s *Redis) runPipelined(ctx context.Context, sc *redis.Script, calls []scriptCall) ([]int64, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(calls))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = sc.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	out := make([]int64, len(calls))
	var first error
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmd = sc.Run(ctx, s.rdb, calls[i].keys, calls[i].args...)
		}
		n, err := cmd.Int64()
		if err != nil && first == nil {
			first = mapRedisErr(err)
		}
		out[i] = n // 0 for a failed call
	}
	return out, first
}

// runAcked runs a script whose writes a caller will be told succeeded.
// When the store waits for replicas, WAIT follows it in the same pipeline:
// WAIT counts the replicas that have every write its connection made, so
// it must share the script's connection. A reply of fewer replicas turns
// the script's result into an error wrapping ErrNotReplicated. A Redis that
// lost its script cache (a promoted replica) answers NOSCRIPT: the pair is
// sent again with the script's source.
func (s *Redis) runAcked(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	if s.minReplicas == 0 {
		return sc.Run(ctx, s.rdb, keys, args...)
	}
	var cmd, wait *redis.Cmd
	send := func(eval func(context.Context, redis.Scripter, []string, ...any) *redis.Cmd) {
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = eval(ctx, p, keys, args...)
			// go-redis' Pipeliner has no Wait method.
			wait = p.Do(ctx, "WAIT", s.minReplicas, s.replicaTimeout.Milliseconds())
			return nil
		})
	}
	send(sc.EvalSha)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		send(sc.Eval)
	}
	switch n, err := wait.Int64(); {
	case cmd.Err() != nil && !errors.Is(cmd.Err(), redis.Nil):
		// The script's own error says more than the wait's.
	case err != nil:
		cmd.SetErr(fmt.Errorf("wait for %d replicas: %w", s.minReplicas, err))
	case n < int64(s.minReplicas):
		cmd.SetErr(fmt.Errorf("%w: %d of %d confirmed within %v", ErrNotReplicated, n, s.minReplicas, s.replicaTimeout))
	}
	return cmd
}
