// Shared by the store, lease and quota tests: a QuotaAdmission on the memory store or on the run's
// redis-server, with ResolvedOptions built literally (only the fields admission reads).
import { Redis } from 'ioredis'
import { QuotaAdmission, type QuotaAdmissionDeps } from '../../src/quota/admission.js'
import type { QwenGuardError } from '../../src/errors.js'
import type { GuardEvent, QuotaPolicies, QuotaState, ResolvedOptions } from '../../src/types.js'
import { redisClient, type StoreKind } from '../../../../test/support/redis.js'

type StoreRedis = ResolvedOptions['store']['redis']

/** The admission-relevant part of ResolvedOptions. */
export function resolvedFor(
  quotas: QuotaPolicies | ResolvedOptions['quotas'],
  store: { redis?: Redis; prefix?: string; onError?: 'open' | 'closed' } = {},
): ResolvedOptions {
  return {
    quotas: typeof quotas === 'function' ? quotas : async () => quotas,
    // The workspace root and core resolve different ioredis patch versions; same runtime class.
    store: {
      redis: store.redis as unknown as StoreRedis,
      prefix: store.prefix ?? 'qg',
      onError: store.onError ?? 'open',
    },
    upstream: { timeoutMs: 120_000 },
  } as unknown as ResolvedOptions
}

let counter = 0

/**
 * Per describe block: returns `make(quotas, deps?)`, which gives a fresh QuotaAdmission (own key
 * prefix, so tests never share counters) and the events it emitted.
 */
export function admissionFactory(kind: StoreKind) {
  const shared = kind === 'redis' ? redisClient() : undefined
  const made: QuotaAdmission[] = []
  return {
    redis: shared?.redis,
    make(quotas: QuotaPolicies, deps: Partial<QuotaAdmissionDeps> & { prefix?: string } = {}) {
      counter += 1
      const prefix = deps.prefix ?? `${shared?.prefix ?? 'mem'}-q${counter}`
      const events: GuardEvent[] = []
      const admission = new QuotaAdmission({
        options: resolvedFor(quotas, { redis: shared?.redis, prefix }),
        emit: (event) => events.push(event),
        ...deps,
      })
      made.push(admission)
      return { admission, events, prefix }
    },
    async closeAll() {
      await Promise.all(made.splice(0).map((admission) => admission.close()))
    },
  }
}

/** The QuotaState of one dimension (throws when absent, so a test cannot pass vacuously). */
export function dim(
  states: QuotaState[],
  dimension: QuotaState['dimension'],
  scope: QuotaState['scope'] = 'user',
): QuotaState {
  const found = states.find((s) => s.dimension === dimension && s.scope === scope)
  if (!found) throw new Error(`no ${scope} ${dimension} in ${JSON.stringify(states)}`)
  return found
}

/** The rejection of a promise (fails when it resolves). */
export async function refusalOf(promise: Promise<unknown>): Promise<QwenGuardError> {
  try {
    await promise
  } catch (error) {
    return error as QwenGuardError
  }
  throw new Error('expected a refusal, the call was admitted')
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export const cost = (tokens: number, usd = 0) => ({ requests: 1, tokens, usd })
