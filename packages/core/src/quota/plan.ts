/**
 * Which counters and leases apply to one identity, what a call costs in each, and how they read as
 * QuotaState. Key layout (documented in docs/quotas.md and docs/redis-cluster.md):
 *   `${prefix}:${scope}:${dimension}:{${scope}:${id}}`              rpm, rps, tpm, tps (rate-limiter-flexible)
 *   `${prefix}:${scope}:${dimension}:{${scope}:${id}}:${UTC date}`  tokensPerDay, usdPerDay
 *   `${prefix}:${scope}:concurrency:{${scope}:${id}}`               lease sorted set (Redis)
 * The `{scope:id}` hash tag puts every key of one identity in one scope on one Redis Cluster slot.
 */
import type { Charge, Reading } from './counters.js'
import type { LeaseCount } from './lease.js'
import type { LimiterFactory } from '../store.js'
import type { Identity, QuotaPolicies, QuotaPolicy, QuotaState } from '../types.js'
import {
  WINDOW_SPECS,
  dailyKey,
  fromPoints,
  limitPoints,
  toPoints,
  utcDay,
  type Cost,
  type UtcDay,
  type WindowSpec,
} from './windows.js'

/** The scopes QuotaAdmission limits (upstream scopes live in upstream/). */
export type QuotaScope = 'user' | 'key'

/**
 * The Redis Cluster hash tag of one identity in one scope, e.g. `{user:alice}`: a cluster hashes
 * only the text between the first `{` and the next `}`, so all of the identity's counters and its
 * lease set share one slot (one node). Every command on them is single-key today; the tag keeps one
 * identity's admission on one node (a stalled node stalls the identities it serves, not every
 * call) and keeps a future multi-key script on them legal. On one redis-server it is only a name.
 */
export function identityTag(scope: QuotaScope, id: string): string {
  return `{${scope}:${id}}`
}

/** A limited windowed dimension of one scope. */
export interface WindowLimit {
  scope: QuotaScope
  spec: WindowSpec
  /** The identity part (user id or key). */
  id: string
  /** Limit in points. */
  limit: number
  /** The scope's policy is in shadow mode: evaluated and reported, never enforced. */
  shadow?: true
}

/** A concurrency limit of one scope. */
export interface LeaseLimit {
  scope: QuotaScope
  /** Store key of the lease set. */
  key: string
  limit: number
  /** The scope's policy is in shadow mode. */
  shadow?: true
}

/** Everything that limits one identity. Empty arrays: the identity is not limited at all. */
export interface Plan {
  windows: WindowLimit[]
  leases: LeaseLimit[]
  /** Some scope of the plan is in shadow mode (its windows and leases say `shadow`). */
  shadow?: true
}

/** A policy's windowed limits in points. */
type PolicyWindows = ReadonlyArray<{ spec: WindowSpec; limit: number }>

/** Worked out once per policy object: a static `quotas` is the same object on every call. */
const windowsByPolicy = new WeakMap<QuotaPolicy, PolicyWindows>()

function policyWindows(policy: QuotaPolicy): PolicyWindows {
  let windows = windowsByPolicy.get(policy)
  if (!windows) {
    const list: Array<{ spec: WindowSpec; limit: number }> = []
    for (const spec of WINDOW_SPECS) {
      const limit = limitPoints(policy, spec)
      if (limit !== undefined) list.push({ spec, limit })
    }
    windows = list
    windowsByPolicy.set(policy, windows)
  }
  return windows
}

function scopeLimits(
  scope: QuotaScope,
  id: string | undefined,
  policy: QuotaPolicy | undefined,
  prefix: string,
  plan: Plan,
) {
  // A missing identity part (or policy) is not limited in that scope.
  if (!id || !policy) return
  const shadow = policy.mode === 'shadow'
  if (shadow) plan.shadow = true
  for (const { spec, limit } of policyWindows(policy))
    plan.windows.push(shadow ? { scope, spec, id, limit, shadow } : { scope, spec, id, limit })
  const concurrency = policy.concurrency
  if (concurrency !== undefined && Number.isFinite(concurrency)) {
    const lease: LeaseLimit = {
      scope,
      key: `${prefix}:${scope}:concurrency:${identityTag(scope, id)}`,
      limit: Math.floor(concurrency),
    }
    if (shadow) lease.shadow = true
    plan.leases.push(lease)
  }
}

/** The plan of an identity under its policies. */
export function planFor(identity: Identity, policies: QuotaPolicies, prefix: string): Plan {
  const plan: Plan = { windows: [], leases: [] }
  scopeLimits('user', identity.user, policies.user, prefix, plan)
  scopeLimits('key', identity.key, policies.key, prefix, plan)
  return plan
}

/** The counters of a plan charged with `cost` at time `now`. */
export function chargesFor(plan: Plan, cost: Cost, factory: LimiterFactory, now: number): Charge[] {
  let day: UtcDay | undefined
  return plan.windows.map(({ scope, spec, id, limit, shadow }) => {
    const counter = factory.counter({ name: `${scope}:${spec.dimension}`, durationSeconds: spec.windowSeconds })
    const points = toPoints(spec.unit, cost[spec.unit])
    const tagged = identityTag(scope, id)
    if (!spec.daily) {
      const charge: Charge = { scope, spec, counter, id, key: tagged, tag: tagged, limit, points, options: {} }
      if (shadow) charge.shadow = true
      return charge
    }
    day ??= utcDay(now)
    const charge: Charge = {
      scope,
      spec,
      counter,
      id,
      key: dailyKey(tagged, day),
      tag: tagged,
      limit,
      points,
      options: { customDuration: day.customDuration },
      dayMsLeft: day.msLeft,
      dayEndsAt: now + day.msLeft,
    }
    if (shadow) charge.shadow = true
    return charge
  })
}

/** A window reading as QuotaState; `extra` points are added first (check(): "after this call"). */
export function windowState(reading: Reading, extra = 0): QuotaState {
  const { spec, limit, scope, dayMsLeft, shadow } = reading.charge
  const consumed = reading.consumed + extra
  // An empty window that this call would open resets one full window (or midnight) from now.
  const windowMs = reading.resetMs > 0 ? reading.resetMs : spec.windowSeconds * 1_000
  const resetMs = consumed > 0 ? Math.min(windowMs, dayMsLeft ?? Infinity) : 0
  const state: QuotaState = {
    scope,
    dimension: spec.dimension,
    limit: fromPoints(spec.unit, limit),
    remaining: fromPoints(spec.unit, Math.max(0, limit - consumed)),
    resetMs,
    windowSeconds: spec.windowSeconds,
  }
  if (shadow) state.shadow = true
  return state
}

/** A lease count as QuotaState: no window, so resetMs and windowSeconds are 0. */
export function leaseState(limit: LeaseLimit, count: LeaseCount | number): QuotaState {
  const held = typeof count === 'number' ? count : count.count
  const state: QuotaState = {
    scope: limit.scope,
    dimension: 'concurrency',
    limit: limit.limit,
    remaining: Math.max(0, limit.limit - held),
    resetMs: 0,
    windowSeconds: 0,
  }
  if (limit.shadow) state.shadow = true
  return state
}
