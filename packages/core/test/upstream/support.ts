// Helpers for the test/upstream/*.test.ts suites (not a test file itself).
import { resolveOptions } from '../../src/options.js'
import type { GuardEvent, GuardOptions, ModelSpec, ResolvedModel, ResolvedOptions } from '../../src/types.js'
import { METER_LUA } from '../../src/upstream/meter-lua.js'
import type { PaceLimits } from '../../src/upstream/pace-limits.js'
import { UpstreamPool } from '../../src/upstream/pool.js'
import { limitArgs } from '../../src/upstream/redis-meter.js'
import type { AcquireRequest } from '../../src/upstream/types.js'

export interface PoolSetup {
  pool: UpstreamPool
  options: ResolvedOptions
  events: GuardEvent[]
}

/** A pool over small made-up models: 'big' (falls back to 'small') and 'small'. */
export function makePool(
  over: {
    accounts?: GuardOptions['upstream']['accounts']
    models?: Record<string, Partial<ModelSpec>>
    upstream?: Partial<GuardOptions['upstream']>
    queue?: GuardOptions['queue']
    store?: GuardOptions['store']
    timeScale?: number
    queueLeaseMs?: number
  } = {},
): PoolSetup {
  const options = resolveOptions({
    upstream: {
      accounts: over.accounts ?? [
        { id: 'acct-a', apiKeys: ['key-a1', 'key-a2'] },
        { id: 'acct-b', apiKeys: ['key-b1'] },
      ],
      rampUp: false,
      ...over.upstream,
    },
    models: over.models ?? {
      big: { rpm: 60, tpm: 60_000, contextWindow: 8_000, fallback: ['small'] },
      small: { rpm: 600, tpm: 600_000, contextWindow: 32_000 },
    },
    ...(over.queue ? { queue: over.queue } : {}),
    ...(over.store ? { store: over.store } : {}),
  })
  const events: GuardEvent[] = []
  const pool = new UpstreamPool({
    options,
    emit: (e) => events.push(e),
    ...(over.timeScale ? { timeScale: over.timeScale } : {}),
    ...(over.queueLeaseMs ? { queueLeaseMs: over.queueLeaseMs } : {}),
  })
  return { pool, options, events }
}

export function request(over: Partial<AcquireRequest> = {}): AcquireRequest {
  return { user: 'u1', model: 'big', promptTokens: 100, reservedTokens: 200, deadline: Date.now() + 120_000, ...over }
}

/** A resolved model of 600 RPM / 10 rps, 60,000 TPM / 1,000 TPS (the meter and pacing tests' unit), with overrides. */
export const model = (over: Partial<ResolvedModel> = {}): ResolvedModel => ({
  name: 'm',
  rpm: 600,
  tpm: 60_000,
  rps: 10,
  tps: 1_000,
  contextWindow: 131_072,
  maxOutputTokens: 8_192,
  fallback: [],
  ...over,
})

/**
 * Makes a client's scripts fail as if its connection reset (`outage`), and answer again
 * (`recovered`, a hand-over's 'absorb' held `absorbDelayMs` first): the meter's store sees an outage
 * without a redis-server being stopped.
 */
export function scriptOutages(redis: { evalsha: unknown; eval: unknown }): {
  outage(): void
  recovered(absorbDelayMs?: number): void
} {
  const r = redis as { evalsha: (...args: unknown[]) => Promise<unknown>; eval: unknown }
  const realEvalsha = r.evalsha.bind(redis)
  const realEval = r.eval
  return {
    outage() {
      r.evalsha = () => Promise.reject(new Error('read ECONNRESET'))
      r.eval = () => Promise.reject(new Error('read ECONNRESET'))
    },
    recovered(absorbDelayMs = 0) {
      r.evalsha = async (...args: unknown[]) => {
        if (absorbDelayMs > 0 && args.includes('absorb')) await new Promise((done) => setTimeout(done, absorbDelayMs))
        return realEvalsha(...args)
      }
      r.eval = realEval
    },
  }
}

/** The meter script on a hand-driven clock: its last two arguments (seconds, microseconds) instead of Redis `TIME`. */
const CLOCKED_METER_LUA = METER_LUA.replace(
  "local t = redis.call('TIME')",
  'local t = { ARGV[#ARGV - 1], ARGV[#ARGV] }',
)

/**
 * Runs the meter script's `op` on `keys` at epoch ms `nowMs` (CLOCKED_METER_LUA), with no view of a
 * lost meter, then `args`.
 */
export async function meterScriptAt(
  redis: { eval(script: string, numKeys: number, ...args: string[]): Promise<unknown> },
  keys: readonly [string, string],
  limits: PaceLimits,
  nowMs: number,
  op: string,
  ...args: string[]
): Promise<string[]> {
  const clock = [String(Math.floor(nowMs / 1000)), String((nowMs % 1000) * 1000)]
  const reply = await redis.eval(
    CLOCKED_METER_LUA,
    2,
    ...keys,
    op,
    ...limitArgs(limits),
    '',
    '0',
    '0',
    '0',
    ...args,
    ...clock,
  )
  return reply as string[]
}
