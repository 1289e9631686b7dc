/**
 * The usage store on Redis, through the guard's store (store.ts: command timeout, outage probes):
 * every guard on the same Redis and prefix adds into the same minutes, so one report covers them all.
 *
 * Keys (one hash tag per account x model, so each script touches one Redis Cluster slot):
 *   `${prefix}:usage:{lanes}`                    hash: JSON [account, model] -> JSON limits
 *   `${prefix}:usage:{${account}|${model}}:i`    sorted set of the minutes with data (score = member = minute number)
 *   `${prefix}:usage:{${account}|${model}}:m:N`  hash: minute N's figures (FIELDS below), expires retention after the minute
 *   `${prefix}:usage:{${account}|${model}}:s:N`  hash: minute N's per-second requests (rS) and tokens (tS), expires after 15 minutes
 * Account ids and model names are URI-encoded in keys (no `|`, `{` or `}` of their own).
 * The busiest second is kept as a running maximum inside one script: counts only grow, so the
 * largest value any second reached is the busiest second, summed over every instance.
 */
import type { GuardStore, RedisConnection } from '../store.js'
import {
  count,
  emptyMinute,
  minuteOf,
  secondOf,
  waitBucket,
  MINUTE_MS,
  WAIT_BUCKETS,
  type LaneMinutes,
  type LaneRef,
  type MinuteRecord,
  type UsageSample,
} from './minute.js'
import { PER_SECOND_MINUTES } from './memory-store.js'
import type { UsageLimits } from './types.js'
import type { UsageStore } from './store.js'

/**
 * KEYS: minute hash, seconds hash, minute index. ARGV: minute number, second, input tokens, output
 * tokens, fallback (0/1), wait bucket, wait ms, minute ttl ms, seconds ttl ms, oldest minute kept.
 */
const RECORD_LUA = `local m, s, idx = KEYS[1], KEYS[2], KEYS[3]
local input, output, wait = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[7])
local r = redis.call('HINCRBY', s, 'r' .. ARGV[2], 1)
local t = redis.call('HINCRBY', s, 't' .. ARGV[2], input + output)
redis.call('PEXPIRE', s, ARGV[9])
redis.call('HINCRBY', m, 'r', 1)
redis.call('HINCRBY', m, 'i', input)
redis.call('HINCRBY', m, 'o', output)
if r > tonumber(redis.call('HGET', m, 'R') or '0') then redis.call('HSET', m, 'R', r) end
if t > tonumber(redis.call('HGET', m, 'T') or '0') then redis.call('HSET', m, 'T', t) end
if ARGV[5] == '1' then redis.call('HINCRBY', m, 'f', 1) end
redis.call('HINCRBY', m, 'w' .. ARGV[6], 1)
redis.call('HINCRBY', m, 'S', wait)
if wait > tonumber(redis.call('HGET', m, 'W') or '0') then redis.call('HSET', m, 'W', wait) end
redis.call('PEXPIRE', m, ARGV[8])
redis.call('ZADD', idx, ARGV[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. ARGV[10])
redis.call('PEXPIRE', idx, ARGV[8])
return 1`

/** KEYS: minute hash, minute index. ARGV: minute number, code, rate (0/1), minute ttl ms, oldest minute kept. */
const REFUSAL_LUA = `redis.call('HINCRBY', KEYS[1], 'x:' .. ARGV[2], 1)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'k', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1`

interface UsageCommands {
  qgUsageRecord(...args: string[]): Promise<number>
  qgUsageRefusal(...args: string[]): Promise<number>
}

/** Minute hashes read per pipeline (each pipeline is one store command, under its timeout). */
const READ_CHUNK = 500

export class RedisUsageStore implements UsageStore {
  private readonly redis: RedisConnection
  private readonly commands: UsageCommands
  private readonly prefix: string
  /** Lanes whose limits this process has written to the lanes hash. */
  private readonly registered = new Set<string>()

  /**
   * @param retentionMs how long a minute is kept (undefined: a reader that writes nothing)
   * @param now the recorder's clock (epoch ms)
   */
  constructor(
    private readonly store: GuardStore,
    private readonly retentionMs: number | undefined,
    private readonly now: () => number,
  ) {
    if (!store.redis) throw new Error('RedisUsageStore needs a Redis store')
    this.redis = store.redis
    this.prefix = `${store.prefix}:usage`
    this.redis.defineCommand('qgUsageRecord', { numberOfKeys: 3, lua: RECORD_LUA })
    this.redis.defineCommand('qgUsageRefusal', { numberOfKeys: 2, lua: REFUSAL_LUA })
    this.commands = this.redis as unknown as UsageCommands
  }

  async record(lane: LaneRef, sample: UsageSample): Promise<void> {
    const minute = minuteOf(sample.at)
    const tag = this.tag(lane)
    const wait = count(sample.waitMs)
    await Promise.all([
      this.register(lane),
      this.store.run(`${tag}:i`, () =>
        this.commands.qgUsageRecord(
          `${tag}:m:${minute}`,
          `${tag}:s:${minute}`,
          `${tag}:i`,
          String(minute),
          String(secondOf(sample.at)),
          String(count(sample.inputTokens)),
          String(count(sample.outputTokens)),
          sample.fallback ? '1' : '0',
          String(waitBucket(wait)),
          String(wait),
          String(this.ttlOf(minute)),
          String(PER_SECOND_MINUTES * MINUTE_MS),
          String(this.oldestKept()),
        ),
      ),
    ])
  }

  async refusal(lane: LaneRef, at: number, code: string, rate: boolean): Promise<void> {
    const minute = minuteOf(at)
    const tag = this.tag(lane)
    await Promise.all([
      this.register(lane),
      this.store.run(`${tag}:i`, () =>
        this.commands.qgUsageRefusal(
          `${tag}:m:${minute}`,
          `${tag}:i`,
          String(minute),
          code,
          rate ? '1' : '0',
          String(this.ttlOf(minute)),
          String(this.oldestKept()),
        ),
      ),
    ])
  }

  async read(fromMinute: number, toMinute: number): Promise<LaneMinutes[]> {
    const lanes = await this.store.run(`${this.prefix}:{lanes}`, () => this.redis.hgetall(`${this.prefix}:{lanes}`))
    const out: LaneMinutes[] = []
    for (const [field, value] of Object.entries(lanes)) {
      const lane = parseLane(field, value)
      if (!lane) continue
      const tag = this.tag(lane)
      const members = await this.store.run(`${tag}:i`, () =>
        this.redis.zrangebyscore(`${tag}:i`, fromMinute, `(${toMinute}`),
      )
      const minutes = new Map<number, MinuteRecord>()
      for (let i = 0; i < members.length; i += READ_CHUNK) {
        const chunk = members.slice(i, i + READ_CHUNK).map(Number)
        const replies = await this.store.run(`${tag}:i`, () => {
          const pipeline = this.redis.pipeline()
          for (const minute of chunk) pipeline.hgetall(`${tag}:m:${minute}`)
          return pipeline.exec()
        })
        chunk.forEach((minute, k) => {
          const [error, hash] = replies?.[k] ?? [new Error('no reply'), null]
          if (error) throw error
          const record = parseMinute(hash as Record<string, string>)
          if (record) minutes.set(minute, record)
        })
      }
      if (minutes.size > 0) out.push({ ...lane, minutes })
    }
    return out
  }

  private tag(lane: { account: string; model: string }): string {
    return `${this.prefix}:{${encodeURIComponent(lane.account)}|${encodeURIComponent(lane.model)}}`
  }

  /**
   * Milliseconds minute `minute` is kept from now: until `retentionMs` after its end. A whole
   * number (the clock may be fractional: a simulator's): PEXPIRE refuses anything else, and a
   * script error would count as a Redis failure.
   */
  private ttlOf(minute: number): number {
    return Math.ceil(Math.max(MINUTE_MS, (minute + 1) * MINUTE_MS + (this.retentionMs ?? 0) - this.now()))
  }

  private oldestKept(): number {
    return minuteOf(this.now() - (this.retentionMs ?? 0))
  }

  /** Writes the lane's limits once per process (again after a failure): the report reads them from Redis. */
  private async register(lane: LaneRef): Promise<void> {
    const field = JSON.stringify([lane.account, lane.model])
    if (this.registered.has(field)) return
    this.registered.add(field)
    try {
      await this.store.run(`${this.prefix}:{lanes}`, () =>
        this.redis.hset(`${this.prefix}:{lanes}`, field, JSON.stringify(lane.limits)),
      )
    } catch (error) {
      this.registered.delete(field)
      throw error
    }
  }
}

function parseLane(field: string, value: string): LaneRef | undefined {
  try {
    const [account, model] = JSON.parse(field) as unknown[]
    const limits = JSON.parse(value) as Partial<UsageLimits>
    if (typeof account !== 'string' || typeof model !== 'string') return undefined
    const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)
    return {
      account,
      model,
      limits: { rpm: num(limits.rpm), tpm: num(limits.tpm), rps: num(limits.rps), tps: num(limits.tps) },
    }
  } catch {
    return undefined
  }
}

/** A minute hash as a record; undefined when it has expired (empty). */
function parseMinute(hash: Record<string, string> | null): MinuteRecord | undefined {
  if (!hash || Object.keys(hash).length === 0) return undefined
  const n = (field: string) => {
    const value = Number(hash[field] ?? 0)
    return Number.isFinite(value) ? value : 0
  }
  const record = emptyMinute()
  record.requests = n('r')
  record.inputTokens = n('i')
  record.outputTokens = n('o')
  record.peakRequestsPerSecond = n('R')
  record.peakTokensPerSecond = n('T')
  record.fallbacks = n('f')
  record.rateRefusals = n('k')
  record.waitSumMs = n('S')
  record.waitMaxMs = n('W')
  for (let i = 0; i < WAIT_BUCKETS; i++) record.waits[i] = n(`w${i}`)
  for (const field of Object.keys(hash)) if (field.startsWith('x:')) record.refusals[field.slice(2)] = n(field)
  return record
}
