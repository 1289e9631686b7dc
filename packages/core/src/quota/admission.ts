/**
 * Admission for the user and key scopes: every limited dimension has room for the call, or nothing
 * is charged. See docs/quotas.md for the dimensions, windows and failure policy.
 */
import {
  blocksAfter,
  blocksBefore,
  consumeAll,
  readAll,
  refundAll,
  waitMs,
  type Charge,
  type Reading,
} from './counters.js'
import { isQwenGuardError, type QwenGuardError } from '../errors.js'
import { createLeaseStore, type Lease, type LeaseAttempt, type LeaseCount, type LeaseStore } from './lease.js'
import { LeaseWaiters } from './lease-wait.js'
import { chargesFor, leaseState, planFor, windowState, type LeaseLimit, type Plan } from './plan.js'
import { impossible, leaseBlock, quotaRefusal, windowBlock } from './refusal.js'
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

/** Context of a reservation, for the `refused` event. */
export interface ReserveContext {
  /** The model the call asks for (the event's `model`; '' when not given). */
  model?: string
  /** The client's signal: a call waiting for a concurrency lease leaves the line when it aborts. */
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

  /** Dry run of `reserve`: reads (`get`) and charges nothing. `remaining` is as after this call. */
  async check(identity: Identity, cost: Cost): Promise<CheckResult> {
    const plan = await this.plan(identity)
    const charges = chargesFor(plan, cost, this.factory, Date.now())
    const [readings, counts] = await this.read(charges, plan.leases)
    const remaining = [
      ...readings.map((reading) => windowState(reading, reading.charge.points)),
      ...plan.leases.map((limit, i) => leaseState(limit, (counts[i]?.count ?? 0) + 1)),
    ]
    const never = impossible(charges, plan.leases, remaining)
    if (never) {
      return {
        allowed: false,
        retryAfterMs: 0,
        remaining,
        blockedBy: [{ scope: never.scope, dimension: never.dimension ?? 'context' }],
      }
    }
    const blocks = [
      ...readings.filter(blocksBefore).map(windowBlock),
      ...plan.leases.flatMap((limit, i) => {
        const count = counts[i]
        return count && count.count >= limit.limit ? [leaseBlock(limit, count.nextExpiryMs)] : []
      }),
    ]
    if (blocks.length === 0) return { allowed: true, retryAfterMs: 0, remaining }
    return {
      allowed: false,
      retryAfterMs: Math.max(...blocks.map((b) => b.waitMs)),
      remaining,
      blockedBy: blocks.map(({ scope, dimension }) => ({ scope, dimension })),
    }
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

  private async plan(identity: Identity): Promise<Plan> {
    return planFor(identity, await this.options.quotas(identity), this.store.prefix)
  }

  private async read(charges: Charge[], leases: LeaseLimit[]): Promise<[Reading[], LeaseCount[]]> {
    try {
      return await Promise.all([readAll(charges), Promise.all(leases.map((l) => this.leases.count(l.key)))])
    } catch (error) {
      throw asUnavailable(error, this.store)
    }
  }

  private async admit(identity: Identity, cost: Cost, context: ReserveContext): Promise<QuotaReservation> {
    const plan = await this.plan(identity)
    const charges = chargesFor(plan, cost, this.factory, Date.now())
    if (charges.length === 0 && plan.leases.length === 0) return QuotaReservationImpl.empty()
    if (impossible(charges, plan.leases, [])) {
      // Rebuilt with the identity's state: the error's RateLimit headers are computed when it is made.
      const limits = await this.state(identity).catch(() => [])
      throw impossible(charges, plan.leases, limits) as QwenGuardError
    }
    if (this.shouldPrecheck(charges)) await this.refuseIfFull(charges)
    const [readings, held] = await this.charge(charges, plan.leases)
    if (!readings.some(blocksAfter) && held.some((h) => !h.lease))
      await this.waitForLeases(identity, readings, held, context)
    if (readings.some(blocksAfter) || held.some((h) => !h.lease)) await this.refuse(readings, held)
    const quota: QuotaState[] = []
    const leases: Lease[] = []
    for (const r of readings) quota.push(windowState(r))
    for (const h of held) {
      quota.push(leaseState(h.limit, h.count))
      if (h.lease) leases.push(h.lease)
    }
    return new QuotaReservationImpl(quota, readings, leases, this.onStoreError)
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
    } catch (error) {
      // The client went away (its abort reason is thrown) or the store failed: give everything back.
      await this.undo(readings, held)
      throw error
    }
  }

  /** Undoes a charge that something refused, then throws the refusal. */
  private async refuse(readings: Reading[], held: Held[]): Promise<never> {
    const over = readings.filter(blocksAfter)
    const blocks = [
      ...over.map(windowBlock),
      ...held.filter((h) => !h.lease).map((h) => leaseBlock(h.limit, h.nextExpiryMs)),
    ]
    this.remember(over)
    await this.undo(readings, held)
    throw quotaRefusal(blocks, this.statesAfterUndo(readings, held))
  }

  /** The precheck: refuse at once, charging nothing, when a counter is already full. */
  private async refuseIfFull(charges: Charge[]): Promise<void> {
    const [readings] = await this.read(charges, [])
    const full = readings.filter(blocksBefore)
    if (full.length === 0) return
    this.remember(full)
    throw quotaRefusal(
      full.map(windowBlock),
      readings.map((r) => windowState(r)),
    )
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
      identity,
      model: context.model ?? '',
      scope: error.scope,
      dimension: error.dimension,
      code: error.code,
      retryAfterMs: error.retryAfterMs,
    })
  }
}

/** A store failure as the caller's refusal: 503 `store_unavailable` (the store may have made it already). */
function asUnavailable(error: unknown, store: GuardStore): QwenGuardError {
  return isQwenGuardError(error) ? error : store.unavailable()
}
