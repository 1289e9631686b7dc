/**
 * The Redis script of the fair queue shared by every instance (shared-queue.ts): start-time fair
 * queuing (SFQ) over the waiters of one model, whatever instance holds them. Keys, all under one
 * `{fq|model}` hash tag (one cluster slot):
 *   KEYS[1] Z  sorted set: waiting entry -> start tag S
 *   KEYS[2] F  hash: user -> finish tag of the user's last entry; field '~v' the virtual time V
 *   KEYS[3] E  sorted set: entry -> the Redis time (ms) after which it is stale (its owner's wait is over)
 *   KEYS[4] A  hash: instance -> the Redis time (ms) until which its lease holds (renewed by heartbeat)
 * An entry is `instance|seq`. A user's new entry gets S = max(V, F[user]) and F[user] = S + 1 (every
 * call costs one); serving an entry sets V = max(V, S). So backlogged users take turns one entry per
 * round whatever instance their calls arrived at, and a user who was idle starts at the current round.
 * Entries at the head whose owner is gone (lease expired) or whose wait is over are dropped by the
 * next check, so a dead instance blocks the order at most one lease.
 *
 * ARGV[1] op:
 *   'check' entry user ttlMs instance leaseMs -> adds the entry if absent, renews the lease, drops
 *           stale heads; returns {S of the entry ('-1' when gone), S of the head, entries waiting}
 *   'done'  entry user served('1'|'0')         -> removes it; served moves V, else the user's finish
 *           tag goes back by one, so the user's next entry takes the turn it lost (when the entry was
 *           not the user's last, e.g. its oldest waiter timed out while younger ones still wait, the
 *           next entry shares the tag of the user's last one; before, the lost turn was a hole that
 *           put the user a round behind users whose waiters did not time out); returns {entries waiting}
 *   'beat'  instance leaseMs                   -> renews the lease
 *   'leave' instance                           -> ends the lease (a closing instance)
 */
export const SHARED_QUEUE_LUA = `
local Z, F, E, A = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left < ms then redis.call('PEXPIRE', key, math.ceil(ms)) end
end
if op == 'beat' then
  redis.call('HSET', A, ARGV[2], string.format('%.3f', now + tonumber(ARGV[3])))
  keep(A, tonumber(ARGV[3]) + 60000)
  return { 1 }
end
if op == 'leave' then
  redis.call('HDEL', A, ARGV[2])
  return { 1 }
end
local entry, user = ARGV[2], ARGV[3]
if op == 'done' then
  local s = tonumber(redis.call('ZSCORE', Z, entry))
  if s then
    redis.call('ZREM', Z, entry)
    redis.call('ZREM', E, entry)
    if ARGV[4] == '1' then
      local v = tonumber(redis.call('HGET', F, '~v')) or 0
      if s > v then redis.call('HSET', F, '~v', tostring(s)) end
    else
      local f = tonumber(redis.call('HGET', F, user))
      if f and f > s then redis.call('HSET', F, user, tostring(f - 1)) end
    end
  end
  local n = redis.call('ZCARD', Z)
  if n == 0 then redis.call('DEL', F, E) end
  return { n }
end
-- check
local ttl, instance, lease = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
redis.call('HSET', A, instance, string.format('%.3f', now + lease))
keep(A, lease + 60000)
local mine = tonumber(redis.call('ZSCORE', Z, entry))
if not mine then
  local v = tonumber(redis.call('HGET', F, '~v')) or 0
  local f = tonumber(redis.call('HGET', F, user)) or 0
  mine = math.max(v, f)
  redis.call('HSET', F, user, tostring(mine + 1))
  redis.call('ZADD', Z, mine, entry)
  redis.call('ZADD', E, now + ttl, entry)
end
for i = 1, 64 do
  local head = redis.call('ZRANGE', Z, 0, 0)[1]
  if not head or head == entry then break end
  local owner = string.match(head, '^([^|]*)|')
  local stale = tonumber(redis.call('ZSCORE', E, head)) or 0
  local alive = tonumber(redis.call('HGET', A, owner or '')) or 0
  if stale > now and alive > now then break end
  redis.call('ZREM', Z, head)
  redis.call('ZREM', E, head)
end
local head = redis.call('ZRANGE', Z, 0, 0, 'WITHSCORES')
local life = ttl + lease + 60000
keep(Z, life)
keep(F, life)
keep(E, life)
return { tostring(mine), head[2] and tostring(head[2]) or '-1', redis.call('ZCARD', Z) }
`
