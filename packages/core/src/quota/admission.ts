/**
 * Admission for the user and key scopes: every limited dimension has room for the call, or nothing
 * is charged. See docs/quotas.md for the dimensions, windows and failure policy.
 */
import {
  blocksAfter,
  blocksBefore,
  chargeEndedWindowsAgain,
  consumeAll,
  readAll,
  refundAll,
  waitMs,
  type Charge,
  type Reading,
} from './counters.js'
import { abortableDelay } from '../abort-followers.js'
import { isQwenGuardError, type QwenGuardError } from '../errors.js'
import { givenIdentity } from '../identity.js'
import { createLeaseStore, type Lease, type LeaseAttempt, type LeaseCount, type LeaseStore } from './lease.js'
import { LeaseWaiters } from './lease-wait.js'
import { chargesFor, leaseState, planFor, windowState, type LeaseLimit, type Plan } from './plan.js'
import { impossible, leaseBlock, quotaRefusal, windowBlock, type Block } from './refusal.js'
import { RecentRefusals } from './recent-refusals.js'
import { QuotaReservationImpl, type QuotaReservation } from './reservation.js'
import { createGuardStore, createLimiterFactory, type GuardStore, type LimiterFactory } from '../store.js'
import type { CheckResult, GuardEvent, Identity, QuotaState, ResolvedOptions } from '../types.js'
import type { Cost } from './windows.js'

export type { Cost } from './windows.js'
export type { QuotaReservation } from './reservation.js'

/**
 * Default lifetime of a concurrency lease after its last renewal (`store.leaseTtlMs`). The holder
 * renews it every third of this while its call runs, so it bounds only how long a lease outlives a
 * process that died.
 */
export const DEFAULT_LEASE_TTL_MS = 30_000

/** What QuotaAdmission needs. */
export interface QuotaAdmissionDeps {
  options: ResolvedOptions
  emit: (event: GuardEvent) => void
  /**
   * The guard's store, shared with the upstream pool (one health tracker, one `store_error` per
   * outage). Default: a store of this admission's own, closed with it.
   */
  store?: GuardStore
  /** Lifetime of a concurrency lease after its last renewal. Default: options.store.leaseTtlMs, else 30,000 ms. */
  leaseTtlMs?: number
  /**
   * Read the counters (`get`) before charging, and refuse without charging when one is already
   * full: fewer false refusals of concurrent calls while a user hammers past a limit, at the price
   * of one more store round trip. true: always; false: never; 'auto' (default): only for an
   * identity this process refused recently and whose wait has not ended (see recent-refusals.ts).
   */
  precheck?: boolean | 'auto'
}

/** Context of a reservation, for the `refused` and `shadow_refused` events. */
export interface ReserveContext {
  /** The call's id (the events' `callId`; '' when not given). */
  callId?: string
  /** The model the call asks for (the event's `model`; '' when not given). */
  model?: string
  /**
   * The client's signal: a call waiting for a concurrency lease, or for the app's `quotas` lookup,
   * stops waiting when it aborts.
   */
  signal?: AbortSignal
  /** Called once when the call starts to wait for a concurrency lease (`queue.waitForConcurrency`). */
  onWait?: () => void
}

interface Held {
  lease?: Lease
  limit: LeaseLimit
  count: number
  nextExpiryMs: number
}

/**
 * The user and key scopes of the guard. `reserve` before the upstream call, then `settle` (or
 * `cancel`) the reservation after it.
 */
export class QuotaAdmission {
  private readonly options: ResolvedOptions
  private readonly emit: (event: GuardEvent) => void
  private readonly store: GuardStore
  private readonly ownStore: boolean
  private readonly factory: LimiterFactory
  private readonly leases: LeaseStore
  private readonly waiters: LeaseWaiters
  private readonly leaseTtlMs: number
  private readonly precheck: boolean | 'auto'
  private readonly refused = new RecentRefusals()
  // Failures are already reported to the store's health by the store itself.
  private readonly onStoreError = (): void => undefined

  constructor(deps: QuotaAdmissionDeps) {
    this.options = deps.options
    this.emit = deps.emit
    this.ownStore = deps.store === undefined
    this.store = deps.store ?? createGuardStore(deps.options.store, deps.emit)
    this.factory = createLimiterFactory(this.store)
    this.leases = createLeaseStore(this.store)
    this.waiters = new LeaseWaiters(this.leases)
    this.leaseTtlMs = deps.leaseTtlMs ?? deps.options.store.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS
    this.precheck = deps.precheck ?? 'auto'
  }

  /**
   * Charges `cost` on every limited dimension of the identity's user and key scopes and takes its
   * concurrency leases, all or nothing. Throws QwenGuardError: 429 (`rate_limit_exceeded`,
   * `quota_exceeded`, `concurrency_limit_exceeded`) with the wait until every blocking dimension has
   * room, 413 `request_too_large` for a cost no window can hold, 503 `store_unavailable` when Redis
   * fails under `onError: 'closed'`. Emits `refused` for each refusal.
   */
  async reserve(identity: Identity, cost: Cost, context: ReserveContext = {}): Promise<QuotaReservation> {
    try {
      return await this.admit(identity, cost, context)
    } catch (error) {
      if (isQwenGuardError(error)) this.emitRefused(identity, context, error)
      throw error
    }
  }

  /**
   * Dry run of `reserve`: reads (`get`) and charges nothing. `remaining` is as after this call.
   * Limits of shadow-mode policies never make `allowed` false: they are listed in `shadowBlockedBy`.
   */
  async check(identity: Identity, cost: Cost): Promise<CheckResult> {
    const plan = await this.plan(identity)
    const charges = chargesFor(plan, cost, this.factory, Date.now())
    const [readings, counts] = await this.read(charges, plan.leases)
    const remaining = [
      ...readings.map((reading) => windowState(reading, reading.charge.points)),
      ...plan.leases.map((limit, i) => leaseState(limit, (counts[i]?.count ?? 0) + 1)),
    ]
    const blocks: Array<Block & { shadow: boolean }> = [
      ...readings.filter(blocksBefore).map((r) => ({ ...windowBlock(r), shadow: r.charge.shadow === true })),
      ...plan.leases.flatMap((limit, i) => {
        const count = counts[i]
        return count && count.count >= limit.limit
          ? [{ ...leaseBlock(limit, count.nextExpiryMs), shadow: limit.shadow === true }]
          : []
      }),
    ]
    const shadowBlockedBy: NonNullable<CheckResult['shadowBlockedBy']> = blocks
      .filter((b) => b.shadow)
      .map(({ scope, dimension }) => ({ scope, dimension }))
    const shadowNever = plan.shadow
      ? impossible(
          charges.filter((c) => c.shadow),
          plan.leases.filter((l) => l.shadow),
          remaining,
        )
      : undefined
    if (shadowNever && shadowBlockedBy.length === 0)
      shadowBlockedBy.push({ scope: shadowNever.scope, dimension: shadowNever.dimension ?? 'context' })
    const withShadow = (result: CheckResult): CheckResult =>
      shadowBlockedBy.length > 0 ? { ...result, shadowBlockedBy } : result
    const never = impossible(
      plan.shadow ? charges.filter((c) => !c.shadow) : charges,
      plan.shadow ? plan.leases.filter((l) => !l.shadow) : plan.leases,
      remaining,
    )
    if (never) {
      return withShadow({
        allowed: false,
        retryAfterMs: 0,
        remaining,
        blockedBy: [{ scope: never.scope, dimension: never.dimension ?? 'context' }],
      })
    }
    const enforced = blocks.filter((b) => !b.shadow)
    if (enforced.length === 0) return withShadow({ allowed: true, retryAfterMs: 0, remaining })
    return withShadow({
      allowed: false,
      retryAfterMs: Math.max(...enforced.map((b) => b.waitMs)),
      remaining,
      blockedBy: enforced.map(({ scope, dimension }) => ({ scope, dimension })),
    })
  }

  /** Every limited dimension of the identity, as it stands (for headers and quota panels). */
  async state(identity: Identity): Promise<QuotaState[]> {
    const plan = await this.plan(identity)
    const charges = chargesFor(plan, { requests: 0, tokens: 0, usd: 0 }, this.factory, Date.now())
    const [readings, counts] = await this.read(charges, plan.leases)
    return [
      ...readings.map((reading) => windowState(reading)),
      ...plan.leases.map((limit, i) => leaseState(limit, counts[i]?.count ?? 0)),
    ]
  }

  /**
   * True while this process remembers refusing the identity's user or key and their wait is not
   * over: its next reserve is likely refused too (and runs the precheck). Costs nothing otherwise.
   */
  recentlyRefused(identity: Identity): boolean {
    if (this.refused.size === 0) return false
    const now = Date.now()
    return (
      (identity.user !== undefined && this.refused.has(`user:${identity.user}`, now)) ||
      (identity.key !== undefined && this.refused.has(`key:${identity.key}`, now))
    )
  }

  /** Stops timers and listeners. The Redis client is the app's: it is left open. */
  async close(): Promise<void> {
    this.waiters.close()
    this.factory.close()
    this.leases.close()
    if (this.ownStore) this.store.close()
  }

  /** The identity's plan; an app's `quotas` lookup ends with the call's signal or its deadline. */
  private async plan(identity: Identity, signal?: AbortSignal): Promise<Plan> {
    // The app's function is asked with the identity it knows (long parts as given, not their hash).
    return planFor(identity, await this.options.quotas(givenIdentity(identity), signal), this.store.prefix)
  }

  private async read(charges: Charge[], leases: LeaseLimit[]): Promise<[Reading[], LeaseCount[]]> {
    try {
      return await Promise.all([readAll(charges), Promise.all(leases.map((l) => this.leases.count(l.key)))])
    } catch (error) {
      throw asUnavailable(error, this.store)
    }
  }

  private async admit(identity: Identity, cost: Cost, context: ReserveContext): Promise<QuotaReservation> {
    const plan = await this.plan(identity, context.signal)
    const charges = chargesFor(plan, cost, this.factory, Date.now())
    if (charges.length === 0 && plan.leases.length === 0) return QuotaReservationImpl.empty()
    if (plan.shadow) return this.admitWithShadow(identity, plan, charges, context)
    await this.refuseImpossible(identity, charges, plan.leases)
    if (this.shouldPrecheck(charges)) await this.refuseIfFull(charges, plan.leases)
    const [readings, held] = await this.charge(charges, plan.leases)
    await this.enforce(identity, readings, held, context)
    return this.reservation(readings, held)
  }

  /**
   * Shadow mode (docs/quotas.md): the enforced scopes decide as always; the shadow scopes are charged
   * beside them (the same store round trip) and, when one of their limits would refuse, their charge
   * is given back at once (an enforcing guard would not have charged a refused call, so the shadow
   * counters keep counting what enforcing would have admitted) and the call goes on, reported by a
   * `shadow_refused` event and `reservation.shadowRefused`. Nothing of a shadow scope ever refuses:
   * not a full counter, not a limit no wait can meet, not a store failure (the shadow part is then
   * simply not evaluated). A shadow scope does not wait for a concurrency lease.
   */
  private async admitWithShadow(
    identity: Identity,
    plan: Plan,
    charges: Charge[],
    context: ReserveContext,
  ): Promise<QuotaReservation> {
    const enforcedCharges = charges.filter((c) => !c.shadow)
    const enforcedLeases = plan.leases.filter((l) => !l.shadow)
    const shadowCharges = charges.filter((c) => c.shadow)
    const shadowLeases = plan.leases.filter((l) => l.shadow)
    await this.refuseImpossible(identity, enforcedCharges, enforcedLeases)
    if (this.shouldPrecheck(enforcedCharges)) await this.refuseIfFull(enforcedCharges, enforcedLeases)
    let verdict = impossible(shadowCharges, shadowLeases, [])
    const nothing: Promise<[Reading[], Held[]]> = Promise.resolve([[], []])
    const [enforced, shadow] = await Promise.allSettled([
      this.charge(enforcedCharges, enforcedLeases),
      verdict ? nothing : this.charge(shadowCharges, shadowLeases),
    ])
    if (enforced.status === 'rejected') {
      if (shadow.status === 'fulfilled') await this.undo(...shadow.value)
      throw enforced.reason
    }
    const [readings, held] = enforced.value
    let [shadowReadings, shadowHeld] = shadow.status === 'fulfilled' ? shadow.value : [[], []]
    const blocks = [
      ...shadowReadings.filter(blocksAfter).map(windowBlock),
      ...shadowHeld.filter((h) => !h.lease).map((h) => leaseBlock(h.limit, h.nextExpiryMs)),
    ]
    if (blocks.length > 0) {
      verdict = quotaRefusal(blocks, [])
      await this.undo(shadowReadings, shadowHeld)
      shadowReadings = []
      shadowHeld = []
    }
    await this.enforce(identity, readings, held, context, { readings: shadowReadings, held: shadowHeld })
    if (verdict) this.emitShadowRefused(identity, context, verdict)
    return this.reservation([...readings, ...shadowReadings], [...held, ...shadowHeld], verdict)
  }

  /** 413 / a zero limit: what no wait can admit is refused before anything is charged. */
  private async refuseImpossible(identity: Identity, charges: Charge[], leases: LeaseLimit[]): Promise<void> {
    if (!impossible(charges, leases, [])) return
    // Rebuilt with the identity's state: the error's RateLimit headers are computed when it is made.
    const limits = await this.state(identity).catch(() => [])
    throw impossible(charges, leases, limits) as QwenGuardError
  }

  /**
   * The enforced charge decides: when only concurrency blocks, wait for the leases; when anything
   * still blocks, undo (with `also`, the shadow scopes' charge) and throw the refusal.
   */
  private async enforce(
    identity: Identity,
    readings: Reading[],
    held: Held[],
    context: ReserveContext,
    also?: { readings: Reading[]; held: Held[] },
  ): Promise<void> {
    if (!readings.some(blocksAfter) && held.some((h) => !h.lease)) {
      try {
        await this.waitForLeases(identity, readings, held, context)
      } catch (error) {
        if (also) await this.undo(also.readings, also.held)
        throw error
      }
    }
    if (readings.some(blocksAfter) || held.some((h) => !h.lease)) await this.refuse(readings, held, also)
  }

  private reservation(readings: Reading[], held: Held[], shadow?: QwenGuardError): QuotaReservation {
    const quota: QuotaState[] = []
    const leases: Lease[] = []
    for (const r of readings) quota.push(windowState(r))
    for (const h of held) {
      quota.push(leaseState(h.limit, h.count))
      if (h.lease) leases.push(h.lease)
    }
    const reservation = new QuotaReservationImpl(quota, readings, leases, this.onStoreError)
    if (shadow) reservation.shadowRefused = { scope: shadow.scope, dimension: shadow.dimension }
    return reservation
  }

  /**
   * Only concurrency blocks the call: wait in line for the missing leases (`queue.waitForConcurrency`),
   * bounded by `queue.maxWaitMs` and the call's deadline, holding what was charged meanwhile. Fills
   * `held` in place; a lease still missing at the end is refused by the caller.
   */
  private async waitForLeases(
    identity: Identity,
    readings: Reading[],
    held: Held[],
    context: ReserveContext,
  ): Promise<void> {
    const queue = this.options.queue
    if (!queue?.waitForConcurrency || queue.maxWaitMs <= 0) return
    context.onWait?.()
    const until = Date.now() + Math.min(queue.maxWaitMs, this.options.upstream.timeoutMs)
    const wait = {
      user: identity.user ?? identity.key ?? '',
      until,
      ...(context.signal ? { signal: context.signal } : {}),
    }
    try {
      for (const h of held) {
        if (h.lease) continue
        const refused: LeaseAttempt & { ok: false } = { ok: false, count: h.count, nextExpiryMs: h.nextExpiryMs }
        const attempt = await this.waiters.wait(h.limit.key, h.limit.limit, this.leaseTtlMs, refused, wait)
        if (!attempt.ok) {
          h.count = attempt.count
          h.nextExpiryMs = attempt.nextExpiryMs
          return
        }
        h.lease = attempt.lease
        h.count = attempt.count
      }
      await this.chargeEndedAgain(readings, until, context.signal)
    } catch (error) {
      // The client went away (its abort reason is thrown) or the store failed: give everything back.
      await this.undo(readings, held)
      throw error
    }
  }

  /**
   * After a wait: the call is sent now, so it must count now. A window that ended during the wait no
   * longer holds its charge (rps 1: waiters charged in three seconds would all be sent in one), so it
   * is charged again in the window current now (chargeEndedWindowsAgain), waiting there for room
   * until `until` (an over charge is left to expire with its window: that window was full anyway).
   * Still over at the end: the caller refuses. Rejects with the caller's abort reason, or 503 when the
   * store fails.
   */
  private async chargeEndedAgain(readings: Reading[], until: number, signal: AbortSignal | undefined): Promise<void> {
    for (;;) {
      try {
        await chargeEndedWindowsAgain(readings, this.onStoreError)
      } catch (error) {
        throw asUnavailable(error, this.store)
      }
      const over = readings.filter(blocksAfter)
      if (over.length === 0) return
      const ms = Math.max(...over.map(waitMs))
      if (Date.now() + ms >= until) return
      await abortableDelay(ms, signal)
    }
  }

  /** Undoes a charge that something refused (and `also`, a shadow charge beside it), then throws the refusal. */
  private async refuse(
    readings: Reading[],
    held: Held[],
    also: { readings: Reading[]; held: Held[] } = { readings: [], held: [] },
  ): Promise<never> {
    const over = readings.filter(blocksAfter)
    const blocks = [
      ...over.map(windowBlock),
      ...held.filter((h) => !h.lease).map((h) => leaseBlock(h.limit, h.nextExpiryMs)),
    ]
    this.remember(over)
    await Promise.all([this.undo(readings, held), this.undo(also.readings, also.held)])
    throw quotaRefusal(blocks, [
      ...this.statesAfterUndo(readings, held),
      ...this.statesAfterUndo(also.readings, also.held),
    ])
  }

  /** The precheck: refuse at once, charging nothing, when a counter is already full. */
  private async refuseIfFull(charges: Charge[], leases: LeaseLimit[]): Promise<void> {
    // The leases are read too, so the refusal's headers name every limit, as after charging.
    const [readings, counts] = await this.read(charges, leases)
    const full = readings.filter(blocksBefore)
    if (full.length === 0) return
    this.remember(full)
    throw quotaRefusal(full.map(windowBlock), [
      ...readings.map((r) => windowState(r)),
      ...leases.map((limit, i) => leaseState(limit, counts[i]?.count ?? 0)),
    ])
  }

  private shouldPrecheck(charges: Charge[]): boolean {
    if (this.precheck !== 'auto') return this.precheck
    if (this.refused.size === 0) return false
    const now = Date.now()
    return charges.some((c) => this.refused.has(`${c.scope}:${c.id}`, now))
  }

  /** Marks the identities of full counters until their windows reset. */
  private remember(full: Reading[]): void {
    const now = Date.now()
    for (const r of full) this.refused.mark(`${r.charge.scope}:${r.charge.id}`, now + waitMs(r))
  }

  /** Consumes every counter and takes every lease; on a store failure undoes what succeeded. */
  private async charge(charges: Charge[], limits: LeaseLimit[]): Promise<[Reading[], Held[]]> {
    let failure: unknown
    const fail = (error: unknown): undefined => {
      failure ??= error
      return undefined
    }
    // Both started before either is awaited: on Redis they travel together.
    const consuming = consumeAll(charges, this.onStoreError).catch(fail)
    const acquiring =
      limits.length === 0
        ? []
        : Promise.all(limits.map((l) => this.waiters.tryAcquire(l.key, l.limit, this.leaseTtlMs).catch(fail)))
    const readings = (await consuming)?.readings ?? []
    const held: Held[] = []
    ;(await acquiring).forEach((attempt, i) => {
      const limit = limits[i] as LeaseLimit
      if (attempt?.ok) held.push({ limit, lease: attempt.lease, count: attempt.count, nextExpiryMs: 0 })
      else if (attempt) held.push({ limit, count: attempt.count, nextExpiryMs: attempt.nextExpiryMs })
    })
    if (failure !== undefined) {
      await this.undo(readings, held)
      throw asUnavailable(failure, this.store)
    }
    return [readings, held]
  }

  private async undo(readings: Reading[], held: Held[]): Promise<void> {
    if (readings.length === 0 && held.length === 0) return
    await Promise.all([refundAll(readings, this.onStoreError), ...held.map((h) => h.lease?.release())])
  }

  /** Quota state after a rollback: this call's points and leases given back. */
  private statesAfterUndo(readings: Reading[], held: Held[]): QuotaState[] {
    return [
      ...readings.map((r) => windowState({ ...r, consumed: Math.max(0, r.consumed - r.charge.points) })),
      ...held.map((h) => leaseState(h.limit, h.lease ? h.count - 1 : h.count)),
    ]
  }

  private emitRefused(identity: Identity, context: ReserveContext, error: QwenGuardError): void {
    this.emit({
      type: 'refused',
      callId: context.callId ?? '',
      identity,
      model: context.model ?? '',
      scope: error.scope,
      dimension: error.dimension,
      code: error.code,
      retryAfterMs: error.retryAfterMs,
    })
  }

  private emitShadowRefused(identity: Identity, context: ReserveContext, verdict: QwenGuardError): void {
    this.emit({
      type: 'shadow_refused',
      callId: context.callId ?? '',
      shadow: true,
      identity,
      model: context.model ?? '',
      scope: verdict.scope,
      dimension: verdict.dimension,
      code: verdict.code,
      retryAfterMs: verdict.retryAfterMs,
    })
  }
}

/** A store failure as the caller's refusal: 503 `store_unavailable` (the store may have made it already). */
function asUnavailable(error: unknown, store: GuardStore): QwenGuardError {
  return isQwenGuardError(error) ? error : store.unavailable()
}
