/**
 * The Redis scripts of an account x model's shared state (shared-lane-state.ts): two hashes per lane,
 * next to its meter keys under the same `{account|model}` hash tag. The lane's, shared by every key
 * of the account (Qwen's rate limits are the account's):
 *   cool  epoch ms (Redis clock) until which the lane cools down after a transient refusal
 *   pace, pat, pfloor, pstep, psec   the AIMD pace set at `pat`; it grows back by `pstep` per `psec`
 * and the disables, one hash per set of API keys (its name ends with their fingerprint), so that a
 * key Qwen refused as invalid does not disable the corrected key deployed after it:
 *   dis   epoch ms until which the lane is disabled (a terminal refusal of this account x model)
 *   adis  epoch ms until which the whole account is disabled (written to every lane of the account)
 *
 * LANE_WRITE_LUA records a refusal (set-if-later for the three times, halve the pace for a burst).
 * `gatedMeterLua(METER_LUA)` wraps the meter script: it first reads the state, and when the lane is
 * cooling or disabled answers that without running the meter; otherwise it runs the meter as is.
 * Either way the state (remaining ms on Redis' clock, and the current pace) comes back with it, so
 * a take learns the shared state in the round trip it makes anyway.
 *
 * Times are Redis `TIME` and go back as remaining ms: one clock for every instance, whatever the
 * skew between hosts. Numbers go back as strings (Redis truncates Lua floats).
 */

/** The pace at Redis time `now` from the hash fields (1 when none was ever set). Lua, shared by both scripts. */
const PACE_AT = `
local function qgPaceAt(S, now)
  local f = redis.call('HMGET', S, 'pace', 'pat', 'pstep', 'psec')
  local p, at, step, sec = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  if not p or not at or not step or not sec or sec <= 0 then return 1 end
  return math.min(1, p + step * math.floor(math.max(0, now - at) / sec))
end
local function qgNow()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function qgNum(x) return string.format('%.3f', x) end
`

/**
 * KEYS[1]: the lane's state hash, KEYS[2]: its disables' hash. ARGV: coolMs, disableMs,
 * accountDisableMs (0: none), burst ('1' halves the pace), paceFloor, paceStep, paceSecondMs.
 * Returns {coolMs, disMs, adisMs, pace} after.
 */
export const LANE_WRITE_LUA = `${PACE_AT}
local S, D = KEYS[1], KEYS[2]
local now = qgNow()
local function later(key, field, ms)
  if ms > 0 then
    local cur = tonumber(redis.call('HGET', key, field)) or 0
    if now + ms > cur then redis.call('HSET', key, field, qgNum(now + ms)) end
  end
end
later(S, 'cool', tonumber(ARGV[1]))
later(D, 'dis', tonumber(ARGV[2]))
later(D, 'adis', tonumber(ARGV[3]))
local floor, step, sec = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if ARGV[4] == '1' then
  local p = math.max(floor, qgPaceAt(S, now) * 0.5)
  redis.call('HSET', S, 'pace', tostring(p), 'pat', qgNum(now), 'pstep', tostring(step), 'psec', tostring(sec))
end
local cool = (tonumber(redis.call('HGET', S, 'cool')) or 0) - now
local d = redis.call('HMGET', D, 'dis', 'adis')
local dis = (tonumber(d[1]) or 0) - now
local adis = (tonumber(d[2]) or 0) - now
local pace = qgPaceAt(S, now)
local live = math.max(cool, 0)
if pace < 1 then live = math.max(live, math.ceil((1 - pace) / step + 1) * sec) end
if redis.call('EXISTS', S) == 1 then redis.call('PEXPIRE', S, math.ceil(live + 60000)) end
if redis.call('EXISTS', D) == 1 then redis.call('PEXPIRE', D, math.ceil(math.max(dis, adis, 0) + 60000)) end
return { qgNum(cool), qgNum(dis), qgNum(adis), tostring(pace) }
`

/**
 * The meter script behind the lane's gate: KEYS[1..2] are the meter's, KEYS[3] the state hash,
 * KEYS[4] the disables' hash; ARGV as the meter's. Returns { {coolMs, disMs, adisMs, pace} } when
 * the lane is out (the meter did not run), else { {...}, meterReply }.
 */
export function gatedMeterLua(meterLua: string): string {
  return `${PACE_AT}
local function qgMeter()
${meterLua}
end
local S, D = KEYS[3], KEYS[4]
local now = qgNow()
local cool = (tonumber(redis.call('HGET', S, 'cool')) or 0) - now
local d = redis.call('HMGET', D, 'dis', 'adis')
local dis = (tonumber(d[1]) or 0) - now
local adis = (tonumber(d[2]) or 0) - now
local state = { qgNum(cool), qgNum(dis), qgNum(adis), tostring(qgPaceAt(S, now)) }
if cool > 0 or dis > 0 or adis > 0 then return { state } end
return { state, qgMeter() }
`
}
