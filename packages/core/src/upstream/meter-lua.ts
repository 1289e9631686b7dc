/**
 * The Redis twin of SlidingLog (sliding-log.ts), atomic as one script. KEYS[1] is a hash (cursors,
 * sums, GCRA time), KEYS[2] a list of "time:requests:tokens" entries, oldest first; an entry's id is
 * `base + index` and never changes while it lives.
 *
 * Time comes from Redis `TIME`, not from the caller: every process sharing the meter then uses one
 * clock, so a host whose clock runs ahead cannot write entries "in the future" (blocking the others)
 * and one running behind cannot expire entries early (over-admitting). Waits are returned relative
 * to that clock, so a local timer of that length is right whatever the skew. (Redis >= 5 replicates
 * script effects, which makes TIME legal in a writing script.)
 *
 * ARGV: op ('take' | 'dry' | 'settle' | 'absorb' | 'move'), rateW, minuteW, rampW, rampPairW, rps, tps, rpm, tpm, rampInitial,
 * rampFactor (0 = off), spacing, tokenSpacing, second (unstretched, ms), jitter (this process's
 * measured allowance J, ms), backdate (ms), then the caller's last view of the meter: the incarnation
 * it last saw ('' = none), that view's age (ms), the minute window's requests and tokens then (a
 * seed for a meter Redis lost, see "Both keys lost" below), then: take/dry -> tokens; settle ->
 * ticket, requests, tokens;
 * absorb -> n, then n x (ageMs, requests, tokens): sends made elsewhere (a process's memory meter
 * while Redis did not answer), recorded ageMs before now (no earlier than the newest entry, so the
 * list stays in time order: at worst a send counts a little longer than it should).
 * move -> ticket, requests, tokens (the send left late: its entry is recorded again at now; the counts,
 * what the caller's ticket says the send counts, for an entry no longer in the list: see `op == 'move'`).
 * Returns take: {1, ticket, lateMs, fractions...}; dry: {1, '-1', '0', incarnation, newestAge, fractions...};
 * blocked: {0, waitMs ('-1' = never), reason, incarnation, newestAge, fractions...} (newestAge: how
 * long ago the minute window's newest entry was recorded; a take's is its lateMs); settle: {2};
 * absorb: {3, incarnation, first id} (the sends' tickets are 'incarnation.id' from it on, in order);
 * move: {4, the moved send's new ticket ('' when nothing moved: gone, cancelled, another
 * incarnation)}. A ticket is 'incarnation.id' (see `inc` below); settle and move take one. A take
 * records its entry up to `backdate` ms before now, at the moment it became admissible
 * (sliding-log.ts, "Entry time"), and returns how far back.
 * fractions...: the busiest window's fraction used, then rps, tps, rpm and tpm's (five numbers, six
 * decimals).
 *
 * Shared jitter allowance (send-delays.ts): an upstream window can hold one process's late send and
 * another's early one, so every process must cover the largest J of them all. The hash keeps the
 * largest J reported in the last JITTER_TTL ms ('ja', 'jt'); each call uses max(its own, that), and the
 * rate and minute windows are max(the stretched window, W + J). Window lengths can therefore change
 * between calls: cursors move back as well as forward, and the list keeps one second of entries past
 * the minute window for a window that grows (J is capped at one second by paceLimits).
 * Numbers go back as strings: Redis would truncate Lua floats to integers.
 * The two keys are written together and expire together; an eviction of one of them alone is
 * repaired (see "One of the two keys gone" below). A lost list (alone or with its hash) comes back as
 * one seed entry of what the minute window last held: those sends are still in Qwen's windows.
 */
export const METER_LUA = `
local H, L = KEYS[1], KEYS[2]
local op = ARGV[1]
local lens = { tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]) }
local rps, tps, rpm, tpm = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local rampInit, rampFactor, spacing = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local tokenSpacing = tonumber(ARGV[13])
local second, ownJitter, backdate = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local JITTER_TTL = 10000
local function emission(k) return math.max(spacing, k * tokenSpacing) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local s = redis.call('HMGET', H, 'base', 'tat', 'last', 'c1', 'r1', 'k1', 'c2', 'r2', 'k2', 'c3', 'r3', 'k3', 'c4', 'r4', 'k4',
  'ja', 'jt', 'inc', 'lost', 'sa', 'si')
-- The meter's incarnation: made anew whenever its hash is (Redis' time in microseconds). A ticket is
-- 'incarnation.id': one issued before both keys were lost (a flush, a restart without persistence)
-- settles nothing after, however the ids of the new meter run.
local inc = s[18]
if not s[1] or not inc then inc = t[1] .. string.format('%06d', tonumber(t[2])) end
local base = tonumber(s[1]) or math.floor(now)
local tat = tonumber(s[2]) or -1
local last = tonumber(s[3]) or 0
if now < last then now = last end
local ja, jt = tonumber(s[16]) or 0, tonumber(s[17]) or -1e18
if ownJitter >= ja or now - jt >= JITTER_TTL then ja, jt = ownJitter, now end
if ja > second then ja = second end
lens[1] = math.max(lens[1], second + ja)
lens[2] = math.max(lens[2], 60 * second + ja)
local C, R, K = {}, {}, {}
for w = 1, 4 do
  C[w] = tonumber(s[1 + 3 * w]) or base
  R[w] = tonumber(s[2 + 3 * w]) or 0
  K[w] = tonumber(s[3 + 3 * w]) or 0
end
local stop = base + redis.call('LLEN', L)
for w = 1, 4 do if C[w] > stop then C[w] = stop end end
-- One of the two keys gone without the other (evicted under maxmemory, deleted by hand): the sums no
-- longer match the list. Both are rebuilt from the list under a new base, above every id issued so far
-- (tickets issued before settle nothing), and the scan below adds back what each window still holds.
-- What a lost list held is still in Qwen's windows: it comes back as one seed entry (below).
local len = stop - base
-- The seed (below): { age (ms), requests, tokens, whether it is a caller's view }.
-- 'lost' is '*' on a meter made where both keys were gone (views of any other incarnation are merged;
-- a hash written before named the one incarnation it replaced); 'sa' the date of the view the seed
-- holds (Redis ms: when its newest send was recorded), 'si' the seed entry's id (-1: none yet).
local seed
local lost, sa, si = s[19] or '', tonumber(s[20]) or -1e18, tonumber(s[21]) or -1
local view = { tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20]) }
if not s[1] and len == 0 and ARGV[17] ~= '' and view[1] < lens[2] then
  -- Both keys lost (a flush, a restart without persistence, a failover to an empty replica): the
  -- caller's last view of the minute window (ARGV[18..20]: its age in ms, requests, tokens).
  -- A view is only as new as its process's last take; the other processes' views are merged in as
  -- their commands come (below), so the new meter holds every send for one second (unstretched)
  -- first: a process that is sending touches it within that second.
  -- Every later view of another incarnation is merged ('*'), not only of the caller's: the caller
  -- may not have touched the meter Redis lost (it saw the one before an earlier loss), and views of
  -- the lost one would then be left out.
  lost, sa, si = '*', -1e18, -1
  seed = { view[1], view[2], view[3], true }
  tat = math.max(tat, now + second + math.max(spacing, 1))
elseif not s[1] and len == 0 then
  -- Both keys gone and the caller has no view younger than the minute window (a process new to the
  -- lane, or idle since it last sent): a meter first used, one that expired, or one Redis lost. Any
  -- view of another incarnation that comes later, younger than the minute window, is of a lost meter
  -- ('*'): it is merged in (below). No hold: a lane that expired (idle two minutes) lost nothing, and
  -- an old view names no incarnation worth waiting for (it may not be the one Redis lost).
  lost, sa, si = '*', -1e18, -1
elseif ARGV[17] ~= '' and (ARGV[17] == lost or (lost == '*' and ARGV[17] ~= inc)) then
  -- Another process that saw the lost meter: each view holds every send up to its process's last
  -- take, so the latest one holds every send of the others that Qwen still counts (below).
  seed = { view[1], view[2], view[3], true }
end
if (not s[1] and len > 0) or (len == 0 and (R[1] ~= 0 or K[1] ~= 0 or R[2] ~= 0 or K[2] ~= 0)) then
  -- The list alone lost: the hash's own minute sums, as of its last write.
  if len == 0 then seed = { now - last, R[2], K[2], false } end
  base = math.max(math.floor(now), stop)
  stop = base + len
  for w = 1, 4 do C[w], R[w], K[w] = stop, 0, 0 end
end
-- The first time (3 decimals, as entries are stored) at which an entry at et has left a window of
-- length len by the rule now - et >= len (et + len can round below it).
local function leftAt(et, len)
  local left = math.ceil((et + len) * 1000) / 1000
  while left - et < len do left = left + 0.001 end
  return left
end
local function parse(v)
  local a, b, c = string.match(v, '^([^:]+):([^:]+):([^:]+)$')
  return tonumber(a), tonumber(b), tonumber(c)
end
local function entry(id) return parse(redis.call('LINDEX', L, id - base)) end
-- What an entry of n requests counts in window w: a seed (below) holds many sends whose times within
-- the minute are unknown, so the ramp's windows (3, 4) count it as one send. Counted whole there, it
-- would make the second before look busy and let the lane climb at once past what Qwen saw.
local function ramped(w, n)
  if w > 2 and n > 1 then return 1 end
  return n
end
-- Entry id (at et, counting er requests and ek tokens) counts nothing from now on, in the list and in
-- every window that still holds it (a seed replaced by a later view, a moved send).
local function uncount(id, et, er, ek)
  redis.call('LSET', L, id - base, string.format('%.3f:0:0', et))
  for w = 1, 4 do
    if id >= C[w] then
      R[w] = R[w] - ramped(w, er)
      K[w] = K[w] - ek
    end
  end
end

-- The seed: one entry of what the minute window held, dated when its newest send was recorded (so it
-- counts until that one leaves the window: the safe side; no earlier than the newest entry, keeping
-- the list in time order), appended after every cursor like an absorbed send. Without it the windows
-- would start empty and the lane would send a whole minute's limit again beside what Qwen still
-- counts. Of the views of the lost meter, the latest-dated one is kept: a view dated later was read
-- later, so it holds every send of an earlier one that is still in the window (the others have left
-- Qwen's too); it replaces the seed entry (zeroed, as a settle to nothing). Adding only the count a
-- later view has beyond the seed dated part of its sends with the earlier view's, too early: near the
-- end of that minute the meter counted them out while Qwen still did. But dates are estimates (below):
-- the seed is the latest date with the largest count of each dimension, so an earlier-read view whose
-- reply was handled late cannot shrink it.
if seed and seed[1] >= 0 and seed[1] < lens[2] and (seed[2] > 0 or seed[3] > 0) then
  local d = now - seed[1]
  local keep = true
  if seed[4] and si >= base and si < stop then
    local et, cr, ck = entry(si)
    -- A view's date is its process's estimate (meter-view.ts): later than the send by the reply's way
    -- back and any stall before the reply was handled (a date in the future comes as age 0). Two views
    -- read close together can come in either order: the seed keeps the latest date and, of each
    -- dimension, the largest count (the view read last is one of them: never fewer than it holds).
    local nd, nr, nk = math.max(d, sa), math.max(seed[2], cr), math.max(seed[3], ck)
    if nd == sa and nr == cr and nk == ck then
      keep = false
    else
      d, seed[2], seed[3] = nd, nr, nk
      uncount(si, et, cr, ck)
    end
  elseif seed[4] and d < sa then
    keep = false -- the seed left the list: so did this older view's sends
  end
  if keep then
    local at = d
    if stop > base then at = math.max(at, entry(stop - 1)) end
    redis.call('RPUSH', L, string.format('%.3f:%d:%.17g', at, seed[2], seed[3]))
    if seed[4] then sa, si = d, stop end
    stop = stop + 1
    for w = 1, 4 do
      R[w] = R[w] + ramped(w, seed[2])
      K[w] = K[w] + seed[3]
    end
  end
end

local absorbed = stop
if op == 'absorb' then
  -- Appended after every cursor, so counted in every window; the scan below drops what a window
  -- no longer holds. Their tickets are 'inc.absorbed' onwards.
  local newest = -1e18
  if stop > base then newest = entry(stop - 1) end
  for i = 0, tonumber(ARGV[21]) - 1 do
    local at = math.max(now - tonumber(ARGV[22 + 3 * i]), newest)
    local nr, nk = tonumber(ARGV[23 + 3 * i]), tonumber(ARGV[24 + 3 * i])
    redis.call('RPUSH', L, string.format('%.3f:%d:%.17g', at, nr, nk))
    newest = tonumber(string.format('%.3f', at))
    stop = stop + 1
    for w = 1, 4 do
      R[w] = R[w] + ramped(w, nr)
      K[w] = K[w] + nk
    end
  end
end

for w = 1, 4 do
  local c = C[w]
  while c > base do
    local et, er, ek = entry(c - 1)
    if now - et >= lens[w] then break end
    c = c - 1
    R[w] = R[w] + ramped(w, er)
    K[w] = K[w] + ek
  end
  while c < stop do
    local et, er, ek = entry(c)
    if now - et < lens[w] then break end
    R[w] = R[w] - ramped(w, er)
    K[w] = K[w] - ek
    c = c + 1
  end
  C[w] = c
end
local passed = math.min(C[1], C[2], C[3], C[4])
local keep = base
while keep < passed and now - entry(keep) >= lens[2] + second do keep = keep + 1 end
if keep > base then
  redis.call('LTRIM', L, keep - base, -1)
  base = keep
end

local function fraction()
  return math.max(R[1] / rps, K[1] / tps, R[2] / rpm, K[2] / tpm)
end
local function num(x) return string.format('%.3f', x) end
-- The busiest fraction, then each dimension's: rps, tps, rpm, tpm (6 decimals: a caller reads the
-- minute window's requests and tokens back from them for a later seed, see "Both keys lost").
local function share(x) return string.format('%.6f', x) end
local function fractions()
  return share(fraction()), share(R[1] / rps), share(K[1] / tps), share(R[2] / rpm), share(K[2] / tpm)
end
local function save()
  redis.call('HSET', H, 'base', base, 'tat', string.format('%.3f', tat), 'last', string.format('%.3f', now),
    'c1', C[1], 'r1', R[1], 'k1', K[1], 'c2', C[2], 'r2', R[2], 'k2', K[2],
    'c3', C[3], 'r3', R[3], 'k3', K[3], 'c4', C[4], 'r4', R[4], 'k4', K[4],
    'ja', string.format('%.3f', ja), 'jt', string.format('%.3f', jt), 'inc', inc,
    'lost', lost, 'sa', string.format('%.3f', sa), 'si', si)
  local ttl = math.ceil(lens[2] + 60000)
  redis.call('PEXPIRE', H, ttl)
  redis.call('PEXPIRE', L, ttl)
end

if op == 'absorb' then
  save()
  return { 3, inc, tostring(absorbed) }
end

if op == 'settle' then
  local idInc, idNum = string.match(ARGV[21], '^(%d+)%.(%d+)$')
  local id, nr, nk = tonumber(idNum), tonumber(ARGV[22]), tonumber(ARGV[23])
  local et, er, ek
  if idInc == inc and id and id >= base and id < stop then et, er, ek = entry(id) end
  -- An entry that counts nothing was cancelled or moved (a settle sent while its move ran late goes
  -- to the moved entry too, redis-meter.ts): counted again here, the send would count twice.
  if et and (er > 0 or ek > 0) then
    redis.call('LSET', L, id - base, string.format('%.3f:%d:%.17g', et, nr, nk))
    local before, after = 0, 0
    if er > 0 then before = emission(ek) end
    if nr > 0 then after = emission(nk) end
    if after < before then tat = tat - (before - after) end
    for w = 1, 4 do
      if id >= C[w] then
        R[w] = R[w] + ramped(w, nr) - ramped(w, er)
        K[w] = K[w] + nk - ek
      end
    end
  end
  save()
  return { 2 }
end

if op == 'move' then
  -- The send left later than its process's jitter allowance covers (send-delays.ts): its entry stops
  -- counting and the same counts are appended at now (no earlier than the newest entry), where
  -- upstream sees the send. The spacing is left alone (sliding-log.ts, move). An entry no longer in
  -- the list (recorded more than the minute window and a second ago: a body written that long after
  -- its grant) is appended with what the caller's ticket counts (ARGV[22], ARGV[23]): moved to nothing,
  -- the send would count in no window from its arrival on. (After the list alone was lost, the seed
  -- of the hash's sums may hold it too: counted twice for a minute, the safe side.)
  local idInc, idNum = string.match(ARGV[21], '^(%d+)%.(%d+)$')
  local id = tonumber(idNum)
  local er, ek = 0, 0
  if idInc == inc and id and id >= base and id < stop then
    local et
    et, er, ek = entry(id)
    if er > 0 or ek > 0 then uncount(id, et, er, ek) end
  elseif idInc == inc and id and id < base then
    er, ek = tonumber(ARGV[22]) or 0, tonumber(ARGV[23]) or 0
  end
  if er > 0 or ek > 0 then
    local at = now
    if stop > base then at = math.max(now, entry(stop - 1)) end
    redis.call('RPUSH', L, string.format('%.3f:%d:%.17g', at, er, ek))
    for w = 1, 4 do
      R[w] = R[w] + ramped(w, er)
      K[w] = K[w] + ek
    end
    save()
    return { 4, inc .. '.' .. tostring(stop) }
  end
  save()
  return { 4, '' }
end

local tokens = tonumber(ARGV[21])
local function windowWait(w, maxReq, maxTok)
  local needR = R[w] + 1 - maxReq
  local needK = K[w] + tokens - maxTok
  if needR <= 0 and needK <= 0 then return 0 end
  local items = redis.call('LRANGE', L, C[w] - base, -1)
  for i = 1, #items do
    local et, er, ek = parse(items[i])
    needR = needR - er
    needK = needK - ek
    if needR <= 0 and needK <= 0 then return leftAt(et, lens[w]) - now end
  end
  return math.huge
end
local function rampWait()
  if rampFactor <= 0 then return 0 end
  local cur = R[3]
  local prev = R[4] - cur
  if cur + 1 <= math.max(rampInit, rampFactor * prev) then return 0 end
  local items = redis.call('LRANGE', L, C[3] - base, -1)
  for i = 1, #items do
    local et, er = parse(items[i])
    if er > 0 then return leftAt(et, lens[3]) - now end
  end
  return 0
end

local worst, reason = 0, ''
if tokens > tps or tokens > tpm then
  worst, reason = math.huge, 'never'
else
  local checks = {
    { tat - math.max(emission(tokens) / 2, 1) - now, 'spacing' },
    { windowWait(1, rps, tps), 'rate' },
    { windowWait(2, rpm, tpm), 'minute' },
    { rampWait(), 'ramp' },
  }
  for i = 1, #checks do
    local w = checks[i][1]
    if w > worst then worst, reason = w, checks[i][2] end
  end
end
-- How long ago the minute window's newest entry was recorded ('0' when it holds none): its sends
-- all leave the window by then plus the window, so a caller dates its view of them there (a seed
-- dated when the view was read would count a seed again, and later, at every loss).
local function newestAge()
  if stop > C[2] then return num(now - entry(stop - 1)) end
  return '0'
end
if reason ~= '' then
  save()
  return { 0, worst == math.huge and '-1' or num(worst), reason, inc, newestAge(), fractions() }
end
if op == 'dry' then
  save()
  return { 1, '-1', '0', inc, newestAge(), fractions() }
end
local id = stop
-- Entry time: the latest of the newest entry, the spacing's due time and each window's newest
-- departure (leftAt: rounded up to the 3 decimals an entry is stored with).
local due = tat - math.max(emission(tokens) / 2, 1)
if stop > base then due = math.max(due, entry(stop - 1)) end
for w = 1, 4 do
  if C[w] > base then due = math.max(due, leftAt(entry(C[w] - 1), lens[w])) end
end
due = math.ceil(due * 1000) / 1000
local at = now
if due < now and now - due <= backdate then at = due end
redis.call('RPUSH', L, string.format('%.3f:1:%.17g', at, tokens))
for w = 1, 4 do
  R[w] = R[w] + 1
  K[w] = K[w] + tokens
end
tat = math.max(tat, at) + emission(tokens)
save()
return { 1, inc .. '.' .. tostring(id), num(now - at), fractions() }
`
