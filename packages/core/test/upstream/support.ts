// Helpers for the test/upstream/*.test.ts suites (not a test file itself).
import { resolveOptions } from '../../src/options.js'
import type { GuardEvent, GuardOptions, ModelSpec, ResolvedModel, ResolvedOptions } from '../../src/types.js'
import { UpstreamPool } from '../../src/upstream/pool.js'
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
