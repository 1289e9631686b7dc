/**
 * The usage recorder: what `guard.usageReport()` reads. Fed by one hook at the upstream send
 * (call.ts: `sent` just before the request goes to Qwen, on the recorder's clock, so per-second
 * peaks count sends the way Qwen counts arrivals; `settled` when the answer is charged, with the
 * tokens Qwen counted) and by the guard's `upstream_refusal` events. Writes are fire-and-forget:
 * a call never waits for them; `report()` waits for this instance's writes still in flight.
 */
import type { GuardStore } from '../store.js'
import type { GuardEvent, ResolvedOptions } from '../types.js'
import type { UpstreamSlot } from '../upstream/types.js'
import { MemoryUsageStore } from './memory-store.js'
import { isRateKind, refusalCode, type LaneRef } from './minute.js'
import { resolvePeriod } from './period.js'
import { RedisUsageStore } from './redis-store.js'
import { buildReport } from './report.js'
import type { UsageStore } from './store.js'
import type { UsagePeriod, UsageReport } from './types.js'

/** What call.ts tells the recorder (the hook at the upstream send). */
export interface UsageHooks {
  /** The request is about to be sent to `slot`'s account x model. */
  sent(slot: UpstreamSlot): void
  /** Qwen answered the request sent to `slot` and it was charged these tokens. */
  settled(slot: UpstreamSlot, charge: { promptTokens: number; completionTokens: number }): void
}

export class UsageRecorder implements UsageHooks {
  private readonly store: UsageStore
  private readonly now: () => number
  private readonly retentionMs: number
  private readonly sentAt = new WeakMap<UpstreamSlot, number>()
  private readonly lanes = new Map<string, LaneRef>()
  private readonly pending = new Set<Promise<void>>()
  private unrecorded = 0

  constructor(
    private readonly options: ResolvedOptions,
    usage: NonNullable<ResolvedOptions['usage']>,
    private readonly guardStore: GuardStore,
  ) {
    const store = guardStore
    this.now = usage.now
    this.retentionMs = usage.retentionMs
    this.store = store.redis
      ? new RedisUsageStore(store, usage.retentionMs, usage.now)
      : new MemoryUsageStore(usage.retentionMs, usage.now)
  }

  sent(slot: UpstreamSlot): void {
    this.recording(() => void this.sentAt.set(slot, this.now()))
  }

  settled(slot: UpstreamSlot, charge: { promptTokens: number; completionTokens: number }): void {
    const lane = this.lane(slot.accountId, slot.model)
    if (!lane) return
    this.recording(() =>
      this.store.record(lane, {
        at: this.sentAt.get(slot) ?? this.now(),
        inputTokens: charge.promptTokens,
        outputTokens: charge.completionTokens,
        fallback: slot.fallbackReason !== undefined,
        waitMs: slot.queuedMs,
      }),
    )
  }

  /** Listener of the guard's events: upstream refusals by code. */
  readonly onEvent = (event: GuardEvent): void => {
    if (event.type !== 'upstream_refusal') return
    const lane = this.lane(event.account, event.model)
    if (!lane) return
    this.recording(() =>
      this.store.refusal(lane, this.now(), refusalCode(event.code, event.kind), isRateKind(event.kind)),
    )
  }

  /**
   * Runs one record's work: a write in flight is kept for `report()`; a failure, even a synchronous
   * one (the app's `usage.now` throwing or returning no epoch ms, options.ts), loses that record and
   * is counted in `unrecorded`, never failing the call that is being recorded.
   */
  private recording(work: () => Promise<void> | undefined): void {
    let write: Promise<void> | undefined
    try {
      write = work()
    } catch {
      this.unrecorded++
      return
    }
    this.track(write)
  }

  /** The report of a period (see UsagePeriod), after this instance's writes in flight. */
  async report(period?: UsagePeriod): Promise<UsageReport> {
    const resolved = resolvePeriod(period, this.now())
    await Promise.allSettled([...this.pending])
    const lanes = await readOrUnavailable(this.guardStore, () =>
      this.store.read(resolved.fromMinute, resolved.toMinute),
    )
    return buildReport(lanes, { period: resolved, unrecorded: this.unrecorded, retentionMs: this.retentionMs })
  }

  /** Keeps a write still in flight for `report()` and counts it if it fails; a finished one (memory) costs nothing. */
  private track(write: Promise<void> | undefined): void {
    if (!write) return
    const tracked = write.then(
      () => undefined,
      () => {
        this.unrecorded++
      },
    )
    this.pending.add(tracked)
    void tracked.finally(() => this.pending.delete(tracked))
  }

  /** The configured account x model with its limits; undefined for anything else. */
  private lane(account: string, model: string): LaneRef | undefined {
    const id = `${account}\u0000${model}`
    let lane = this.lanes.get(id)
    if (!lane) {
      const spec = this.options.accounts.find((a) => a.id === account)?.models[model]
      if (!spec) return undefined
      lane = { account, model, limits: { rpm: spec.rpm, tpm: spec.tpm, rps: spec.rps, tps: spec.tps } }
      this.lanes.set(id, lane)
    }
    return lane
  }
}

/**
 * Reads the report of a period straight from a store, without a guard (the `qwen-guard report`
 * command): what every guard on this Redis and prefix recorded.
 */
export async function readUsageReport(store: GuardStore, period?: UsagePeriod, now = Date.now()): Promise<UsageReport> {
  const resolved = resolvePeriod(period, now)
  const reader = new RedisUsageStore(store, undefined, () => now)
  const lanes = await readOrUnavailable(store, () => reader.read(resolved.fromMinute, resolved.toMinute))
  return buildReport(lanes, { period: resolved, unrecorded: 0 })
}

/** A read that failed on Redis (down, timed out) rejects with the store's 503 `store_unavailable`. */
async function readOrUnavailable<T>(store: GuardStore, read: () => Promise<T>): Promise<T> {
  try {
    return await read()
  } catch (error) {
    if (!store.redis) throw error
    throw store.unavailable()
  }
}
