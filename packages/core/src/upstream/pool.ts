/**
 * UpstreamPool: hands out permission to send one request to one account x model, paced so that no
 * sliding window of any upstream limit is exceeded (sliding-log.ts), preferring the least-loaded
 * account with room, falling back to the configured models when the requested one has no room, and
 * queueing fairly between users when nothing has room (fair-queue.ts). Waiters are woken by a timer
 * set to the earliest moment a meter, a cooldown or a disable says room appears, or when a slot
 * settles or cancels; never by polling. On a Redis store, lanes' cooldowns, disables and pace are
 * shared with every instance (shared-lane-state.ts), and waiters follow one fair order across
 * instances (shared-queue.ts); a waiter not yet in that order's head round looks again every half
 * emission interval of its lanes, the one wake-up that is not told by a meter (and meanwhile tells
 * its lanes' meters what this instance last saw of them: redis-meter.ts, `refresh`).
 */
import { createHash } from 'node:crypto'
import { onAbort } from '../abort-followers.js'
import { queueFull, upstreamSaturated, upstreamUnavailable, type QwenGuardError } from '../errors.js'
import type { GuardEvent, ResolvedOptions } from '../types.js'
import { CandidateCache, type Candidate } from './candidates.js'
import { applyRefusal } from './consequences.js'
import { FairQueue } from './fair-queue.js'
import { AccountRuntime, Lane } from './lane.js'
import { MemoryMeter, type Meter, type MeterTicket } from './meter.js'
import type { PaceConfig } from './pace-limits.js'
import { INCREASE_STEP } from './pace-control.js'
import type { DimensionFractions } from './sliding-log.js'
import { RedisMeter } from './redis-meter.js'
import { SharedLaneState, type SharedLaneView } from './shared-lane-state.js'
import { SharedQueue, type SharedEntry } from './shared-queue.js'
import { SendDelays } from './send-delays.js'
import { watchWireDelays } from './wire-delays.js'
import { createGuardStore, type GuardStore } from '../store.js'
import { newCallId } from '../call-id.js'
import type { AcquireRequest, UpstreamRefusal, UpstreamSlot, UpstreamState } from './types.js'

export interface UpstreamPoolDeps {
  options: ResolvedOptions
  emit: (event: GuardEvent) => void
  /**
   * Simulated ms per real ms, for runs against a time-scaled simulator (its windows are shorter
   * in real time by this factor). Default 1.
   */
  timeScale?: number
  /**
   * The guard's store, shared with quota admission (one health tracker, one `store_error` per
   * outage). Default: a store of the pool's own, closed with it.
   */
  store?: GuardStore
  /**
   * Real ms an instance's entries in the shared queue (Redis store) count after its last heartbeat:
   * how long a dead instance can hold up the shared order. Default SHARED_QUEUE_LEASE_MS (3 s).
   */
  queueLeaseMs?: number
}

interface Grant {
  lane: Lane
  ticket: MeterTicket
  fallbackReason: string | undefined
  /**
   * When the meter was asked for this grant, less how far back it recorded the send (`SendDelays`
   * clock, ms): where the send-delay sample starts.
   */
  askedAt: number
}

interface Attempt {
  grant?: Grant
  /** Earliest epoch ms at which some candidate may have room (Infinity when unknown). */
  nextAt: number
}

interface Waiter {
  user: string
  req: AcquireRequest
  candidates: readonly Candidate[]
  enqueuedAt: number
  nextAt: number
  done: boolean
  /** Its place in the order shared by every instance (Redis store only). */
  shared?: SharedEntry
  resolve(slot: UpstreamSlot): void
  reject(error: unknown): void
  cleanup(): void
}

export class UpstreamPool {
  private readonly options: ResolvedOptions
  private readonly emit: (event: GuardEvent) => void
  private readonly timeScale: number
  private readonly accounts: AccountRuntime[]
  private readonly lanes: Lane[] = []
  private readonly lanesByModel = new Map<string, Lane[]>()
  private readonly candidates: CandidateCache
  private readonly queue = new FairQueue<Waiter>()
  /** Per model: when it was last seen to have room next (for wait estimates of unserved waiters). */
  private readonly modelNextAt = new Map<string, number>()
  private draining = false
  private drainAgain = false
  private wakeTimer: NodeJS.Timeout | undefined
  private rotation = 0
  private closed = false
  private readonly store: GuardStore
  private readonly ownStore: boolean
  /** Per lane, its state shared through Redis (none on a memory store). */
  private readonly sharedState = new Map<Lane, SharedLaneState>()
  /** The fair order shared by every instance on the Redis store (none on a memory store). */
  private readonly sharedQueue: SharedQueue | undefined
  /**
   * Per model: until when (epoch ms) the shared queue was last seen to hold waiters. Until then a
   * new call of that model queues here instead of taking the meter at once, so a user cannot jump
   * the shared order by sending to an instance where nobody waits.
   */
  private readonly sharedBusyUntil = new Map<string, number>()
  /** Grant-to-wire delays of this process's sends: the pacer's jitter allowance (send-delays.ts). */
  private readonly delays = new SendDelays()
  private readonly stopWireDelays: () => void

  constructor(deps: UpstreamPoolDeps) {
    this.options = deps.options
    this.emit = deps.emit
    this.timeScale = deps.timeScale ?? 1
    const config: PaceConfig = {
      safetyMargin: this.options.upstream.safetyMargin,
      rampUp: this.options.upstream.rampUp,
      timeScale: this.timeScale,
      jitterMs: () => this.delays.allowanceMs(),
    }
    this.ownStore = deps.store === undefined
    this.store = deps.store ?? createGuardStore(this.options.store, this.emit)
    this.accounts = this.options.accounts.map((account, index) => new AccountRuntime(account, index))
    for (const owner of this.accounts) {
      for (const model of Object.values(owner.account.models)) {
        // The shared state reports to its lane, which is built on the meter that runs behind its gate.
        const built: { lane?: Lane } = {}
        const shared = this.sharedStateFor(
          owner.account,
          model.name,
          (view) => built.lane?.adoptShared(view, Date.now()),
          {
            get floor() {
              return built.lane?.control.floor ?? 0.1
            },
            step: INCREASE_STEP,
            secondMs: 1000 / this.timeScale,
          },
        )
        const lane = new Lane(owner, model, this.meterFor(owner.account.id, model.name, shared), config)
        built.lane = lane
        if (shared) this.sharedState.set(lane, shared)
        this.lanes.push(lane)
        const list = this.lanesByModel.get(model.name) ?? []
        list.push(lane)
        this.lanesByModel.set(model.name, list)
      }
    }
    this.candidates = new CandidateCache(this.lanesByModel, this.options.models)
    this.sharedQueue = this.store.redis ? new SharedQueue(this.store, deps.queueLeaseMs) : undefined
    this.stopWireDelays = watchWireDelays(this.options.baseURL, this.delays)
  }

  /** Waits (fairly, bounded) for room on the requested model or a fallback; see ARCHITECTURE.md. */
  async acquire(req: AcquireRequest): Promise<UpstreamSlot> {
    const started = Date.now()
    req.callId ??= newCallId()
    throwIfGone(req)
    if (this.closed) throw unavailable(0, 'The guard is closed.')
    const candidates = this.candidates.get(req)
    this.throwIfAllDisabled(candidates)
    if (this.queue.size === 0 && !this.draining && !this.sharedBusy(req.model, started)) {
      const attempt = await this.tryNow(candidates, req, NOTHING_BLOCKED)
      if (attempt.grant) {
        if (!isGone(req)) return this.slotFor(attempt.grant, req, started)
        await attempt.grant.ticket.recount(0, 0)
        throwIfGone(req)
      }
    }
    throwIfGone(req) // abandoned while the meter answered: never queue it
    return this.enqueue(req, candidates, started)
  }

  /**
   * The caller of `acquire(req)` no longer wants the slot (its quota refused meanwhile): a queued
   * wait ends at once, a take in progress ends as soon as the meter answers, both rejecting with
   * `reason`; a slot already handed out is the caller's to cancel. No abort signal needed.
   */
  abandon(req: AcquireRequest, reason: unknown): void {
    req.abandoned ??= { reason }
    for (const waiter of this.queue.all()) if (waiter.req === req) this.finishWaiter(waiter, req.abandoned.reason)
  }

  state(): UpstreamState[] {
    const now = Date.now()
    return this.lanes.map((lane) => ({
      account: lane.owner.account.id,
      accountIndex: lane.owner.index,
      model: lane.model.name,
      inFlight: lane.inFlight,
      usedFraction: lane.meter.usedFraction(lane.limits()),
      used: lane.meter.usedFractions(lane.limits()),
      coolingUntil: lane.coolingAt(now),
      disabledUntil: lane.disabledAt(now),
      pace: lane.control.pace,
    }))
  }

  /** Rejects every waiter (503) and stops the timers. Slots already handed out stay valid. */
  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.wakeTimer)
    this.stopWireDelays()
    for (const waiter of this.queue.all()) this.finishWaiter(waiter, unavailable(0, 'The guard is closed.'))
    this.sharedQueue?.close()
    for (const lane of this.lanes) lane.meter.close?.()
    if (this.ownStore) this.store.close()
  }

  // ---- choosing a lane ----

  /**
   * One pass over the candidates in order (requested model first). Within a model, lanes that are
   * not cooling or disabled are tried least-loaded first. Models in `blocked` are skipped: an
   * earlier waiter in this round is waiting for them, and taking their room would jump the queue.
   */
  private async tryNow(
    candidates: readonly Candidate[],
    req: AcquireRequest,
    blocked: ReadonlySet<string>,
  ): Promise<Attempt> {
    let nextAt = Infinity
    // The requested model is not a candidate at all when the request does not fit its context.
    let firstReason: string | undefined = candidates[0]?.model === req.model ? undefined : 'context'
    for (let index = 0; index < candidates.length; index++) {
      const candidate = candidates[index]!
      let reason = 'saturated'
      if (!blocked.has(candidate.model)) {
        const tried = await this.tryModel(candidate, req)
        if (tried.grant) {
          tried.grant.fallbackReason = candidate.model === req.model ? undefined : firstReason
          return { grant: tried.grant, nextAt: Date.now() }
        }
        reason = tried.reason
        nextAt = Math.min(nextAt, tried.nextAt)
        this.modelNextAt.set(candidate.model, tried.nextAt)
      }
      if (index === 0 && candidate.model === req.model) firstReason = reason
    }
    return { nextAt }
  }

  private async tryModel(candidate: Candidate, req: AcquireRequest): Promise<Attempt & { reason: string }> {
    const now = Date.now()
    const ready: Lane[] = []
    let live = 0
    let backAt = Infinity
    let nextAt = Infinity
    for (const lane of candidate.lanes) {
      const disabled = lane.disabledAt(now)
      if (disabled) {
        backAt = Math.min(backAt, disabled)
        continue
      }
      live++
      const cooling = lane.coolingAt(now)
      if (cooling) nextAt = Math.min(nextAt, cooling)
      else ready.push(lane)
    }
    if (live === 0) return { nextAt: backAt, reason: 'disabled' }
    for (const lane of ready.length > 1 ? this.byLoad(ready) : ready) {
      const askedAt = this.delays.now()
      const taken = await lane.meter.take(req.reservedTokens, lane.limits())
      if (taken.ok) {
        // The sample runs from when the meter recorded the send: it may have backdated it.
        const grant = { lane, ticket: taken.ticket, fallbackReason: undefined, askedAt: askedAt - taken.lateMs }
        return { grant, nextAt: now, reason: '' }
      }
      nextAt = Math.min(nextAt, Date.now() + taken.waitMs)
    }
    return { nextAt, reason: ready.length === 0 ? 'cooling' : 'saturated' }
  }

  /** Least fraction used first, then fewest in flight; ties rotate so idle accounts share the load. */
  private byLoad(lanes: Lane[]): Lane[] {
    this.rotation = (this.rotation + 1) % 1_000_000
    const n = this.accounts.length
    const scored = lanes.map((lane) => ({
      lane,
      used: lane.meter.usedFraction(lane.limits()),
      tie: (lane.owner.index + this.rotation) % n,
    }))
    scored.sort((a, b) => a.used - b.used || a.lane.inFlight - b.lane.inFlight || a.tie - b.tie)
    return scored.map((s) => s.lane)
  }

  private throwIfAllDisabled(candidates: readonly Candidate[]): void {
    const back = this.allDisabledUntil(candidates)
    if (back !== undefined) throw unavailable(back - Date.now(), 'No Qwen account can serve this model right now.')
  }

  /** When every lane of every candidate is disabled: the epoch ms the first comes back. */
  private allDisabledUntil(candidates: readonly Candidate[]): number | undefined {
    const now = Date.now()
    let back = Infinity
    for (const candidate of candidates) {
      for (const lane of candidate.lanes) {
        const disabled = lane.disabledAt(now)
        if (!disabled) return undefined
        back = Math.min(back, disabled)
      }
    }
    return Number.isFinite(back) ? back : undefined
  }

  // ---- the queue ----

  private enqueue(req: AcquireRequest, candidates: readonly Candidate[], started: number): Promise<UpstreamSlot> {
    if (this.closed) throw unavailable(0, 'The guard is closed.')
    if (this.queue.size >= this.options.queue.maxSize) {
      throw queueFull(
        'Too many calls are waiting for upstream capacity; try again shortly.',
        this.estimateWait(candidates, this.queue.size),
      )
    }
    const giveUpAt = Math.min(started + this.options.queue.maxWaitMs, req.deadline)
    return new Promise<UpstreamSlot>((resolve, reject) => {
      const timer = setTimeout(() => this.expire(waiter), Math.max(0, giveUpAt - Date.now()))
      const waiter: Waiter = {
        user: req.user,
        req,
        candidates,
        enqueuedAt: started,
        nextAt: Infinity,
        done: false,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer)
          stopFollowing?.()
        },
      }
      if (this.sharedQueue) waiter.shared = this.sharedQueue.entry(req.model, req.user, giveUpAt - Date.now())
      const { signal } = req
      const stopFollowing = signal ? onAbort(signal, () => this.finishWaiter(waiter, signal.reason)) : undefined
      const position = this.queue.push(waiter)
      this.emit({ type: 'queued', callId: req.callId ?? '', identity: { user: req.user }, model: req.model, position })
      this.kick()
    })
  }

  /** Removes a waiter and rejects it (abort, timeout, close). */
  private finishWaiter(waiter: Waiter, error: unknown): void {
    if (waiter.done) return
    waiter.done = true
    this.queue.remove(waiter)
    if (waiter.shared) this.sharedQueue?.done(waiter.shared, false)
    waiter.cleanup()
    waiter.reject(error)
  }

  private expire(waiter: Waiter): void {
    if (waiter.done) return
    const back = this.allDisabledUntil(waiter.candidates)
    if (back !== undefined) {
      return this.finishWaiter(
        waiter,
        unavailable(back - Date.now(), 'No Qwen account can serve this model right now.'),
      )
    }
    const retryAfterMs = this.estimateWait(waiter.candidates, this.queue.ahead(waiter), waiter.nextAt)
    this.finishWaiter(
      waiter,
      upstreamSaturated(
        'Upstream capacity for this model is exhausted for now; try again after the indicated wait.',
        'queue',
        retryAfterMs,
      ),
    )
  }

  /**
   * When a call arriving now could expect room: when the meters next have room for these models,
   * plus one emission interval (of all their lanes together) per waiter that would go first.
   */
  private estimateWait(candidates: readonly Candidate[], ahead: number, known = Infinity): number {
    const now = Date.now()
    let next = known
    for (const c of candidates) next = Math.min(next, this.modelNextAt.get(c.model) ?? Infinity)
    let perMs = 0
    for (const c of candidates) {
      for (const lane of c.lanes) if (!lane.disabledAt(now)) perMs += 1 / lane.limits().spacingMs
    }
    const interval = perMs > 0 ? 1 / perMs : 1000
    const base = Number.isFinite(next) ? Math.max(0, next - now) : interval
    return Math.max(1, Math.ceil(base + ahead * interval))
  }

  /** Runs the queue now (or again after the drain in progress); nothing to do when nobody waits. */
  private kick(): void {
    if (this.queue.size === 0) return
    void this.drain().catch(() => undefined)
  }

  private async drain(): Promise<void> {
    if (this.draining) {
      this.drainAgain = true
      return
    }
    this.draining = true
    try {
      do {
        this.drainAgain = false
        await this.drainPasses()
      } while (this.drainAgain)
    } finally {
      this.draining = false
    }
    this.scheduleWake()
  }

  /**
   * Rounds over each user's oldest waiter, the user whose turn it is first. A waiter that gets room
   * ends the round (the turn passes to the next user); one that does not blocks its models for the
   * rest of the round, so later waiters cannot take room it is waiting for.
   */
  private async drainPasses(): Promise<void> {
    for (;;) {
      if (this.queue.size === 0 || this.closed) return
      for (const waiter of this.queue.all()) waiter.nextAt = Infinity
      const blocked = new Set<string>()
      let served = false
      // A waiter refused in this pass (all disabled, the store's policy) lets its user's next one be tried.
      let finished = false
      const order = (this.sharedQueue && (await this.sharedOrder())) || this.queue.heads()
      for (const waiter of order) {
        if (waiter.done || waiter.candidates.every((c) => blocked.has(c.model))) continue
        const back = this.allDisabledUntil(waiter.candidates)
        if (back !== undefined) {
          this.finishWaiter(waiter, unavailable(back - Date.now(), 'No Qwen account can serve this model right now.'))
          finished = true
          continue
        }
        let attempt: Attempt
        try {
          attempt = await this.tryNow(waiter.candidates, waiter.req, blocked)
        } catch (error) {
          this.finishWaiter(waiter, error) // e.g. store_unavailable under onError 'closed'
          finished = true
          continue
        }
        if (attempt.grant && waiter.done) {
          await attempt.grant.ticket.recount(0, 0) // aborted while we were taking: give it back
          continue
        }
        if (attempt.grant) {
          this.serve(waiter, attempt.grant)
          served = true
          break
        }
        waiter.nextAt = attempt.nextAt
        // No room before its deadline (every lane cooling past it, say): refused now, not at the deadline.
        if (Number.isFinite(attempt.nextAt) && attempt.nextAt >= waiter.req.deadline) {
          this.expire(waiter)
          finished = true
          continue
        }
        for (const c of waiter.candidates) blocked.add(c.model)
      }
      if (!served && !finished) return
    }
  }

  /**
   * The waiters that may take room now, in the shared fair order: those whose start tag is in the
   * head's round (every instance together), lowest tag first. The others wait for the round to
   * move: they look again after half the candidates' emission interval (when room can next appear).
   * Undefined when Redis did not answer: the memory fair queue orders this instance's waiters.
   */
  private async sharedOrder(): Promise<Waiter[] | undefined> {
    const shared = this.sharedQueue!
    const waiters = this.queue.all().filter((w) => !w.done && w.shared)
    // Every entry Redis has not seen yet, and per model the lowest known one (reads the head).
    const lowest = new Map<string, Waiter>()
    const toCheck: Waiter[] = []
    for (const waiter of waiters) {
      const entry = waiter.shared!
      if (entry.tag === undefined) toCheck.push(waiter)
      else {
        const low = lowest.get(entry.model)
        if (!low || entry.tag < low.shared!.tag!) lowest.set(entry.model, waiter)
      }
    }
    toCheck.push(...lowest.values())
    const checks = await Promise.all(toCheck.map((w) => shared.check(w.shared!)))
    const heads = new Map<string, number>()
    const now = Date.now()
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i]
      if (!check) return undefined
      const model = toCheck[i]!.shared!.model
      heads.set(model, Math.min(heads.get(model) ?? Infinity, check.head))
      if (check.size > 1) this.sharedBusyUntil.set(model, now + SHARED_BUSY_MS)
    }
    const eligible: Waiter[] = []
    for (const waiter of waiters) {
      if (waiter.done) continue
      const { tag, model } = waiter.shared!
      const head = heads.get(model) ?? -Infinity
      if (tag === undefined || tag < head + 1) eligible.push(waiter)
      else {
        waiter.nextAt = now + this.recheckMs(waiter.candidates)
        // It does not take room meanwhile, so its lanes' meters would not hear from this instance:
        // they get its view of them (what they held at its last take) if Redis lost them.
        for (const c of waiter.candidates) for (const lane of c.lanes) lane.meter.refresh?.(lane.limits())
      }
    }
    return eligible.sort((a, b) => a.shared!.tag! - b.shared!.tag! || a.enqueuedAt - b.enqueuedAt)
  }

  /** Half the emission interval of these candidates' lanes together: how soon room can reappear. */
  private recheckMs(candidates: readonly Candidate[]): number {
    const now = Date.now()
    let perMs = 0
    for (const c of candidates) {
      for (const lane of c.lanes) if (!lane.disabledAt(now)) perMs += 1 / lane.limits().spacingMs
    }
    return perMs > 0 ? Math.max(1, 1 / perMs / 2) : 1000 / this.timeScale
  }

  /** Whether other instances were recently seen queueing for this model (Redis store only). */
  private sharedBusy(model: string, now: number): boolean {
    return this.sharedQueue !== undefined && (this.sharedBusyUntil.get(model) ?? 0) > now
  }

  private serve(waiter: Waiter, grant: Grant): void {
    waiter.done = true
    this.queue.served(waiter)
    if (waiter.shared) this.sharedQueue?.done(waiter.shared, true)
    waiter.cleanup()
    waiter.resolve(this.slotFor(grant, waiter.req, waiter.enqueuedAt, true))
  }

  /** One timer, at the earliest moment some waiter's candidate may have room. */
  private scheduleWake(): void {
    clearTimeout(this.wakeTimer)
    this.wakeTimer = undefined
    if (this.queue.size === 0 || this.closed) return
    let next = Infinity
    for (const waiter of this.queue.all()) next = Math.min(next, waiter.nextAt)
    if (!Number.isFinite(next)) return
    // +1 ms: timers may fire up to a millisecond early relative to Date.now().
    this.wakeTimer = setTimeout(() => this.kick(), Math.max(0, Math.ceil(next - Date.now())) + 1)
  }

  // ---- slots ----

  /** `queued`: the call waited in the queue for this slot (its `waitedFor` is then worked out). */
  private slotFor(grant: Grant, req: AcquireRequest, started: number, queued = false): UpstreamSlot {
    const { lane, ticket } = grant
    lane.inFlight++
    const model = lane.model.name
    // Told when the call is sent on it, not when granted: a slot asked for beside the quota check
    // (call.ts, acquireEarly) is given back when the quota refuses, and nothing was served.
    const fallback = () => {
      if (grant.fallbackReason === undefined) return
      this.emit({
        type: 'fallback',
        callId: req.callId ?? '',
        identity: { user: req.user },
        requested: req.model,
        served: model,
        reason: grant.fallbackReason,
      })
    }
    let done = false
    const finish = async (requests: number, tokens: number, after: () => void) => {
      if (done) return
      done = true
      lane.inFlight--
      await ticket.recount(requests, tokens)
      after()
      this.kick()
    }
    const slot: UpstreamSlot = {
      accountId: lane.owner.account.id,
      apiKey: lane.owner.key(),
      model,
      queuedMs: Date.now() - started,
      sending: () => {
        // Later than the allowance covers: the meter counts the send from when it left (send-delays.ts).
        this.delays.sent(grant.askedAt, () => void ticket.move?.())
        fallback()
      },
      settle: (usedTokens) =>
        finish(1, Math.max(0, usedTokens), () => {
          lane.consecutive = 0
          lane.control.success(Date.now(), 1000 / this.timeScale)
        }),
      fail: (refusal) =>
        finish(1, tokensAfterRefusal(refusal, req.reservedTokens), () =>
          this.onRefusal(lane, refusal, req.callId ?? ''),
        ),
      cancel: () => finish(0, 0, () => undefined),
    }
    if (grant.fallbackReason !== undefined) slot.fallbackReason = grant.fallbackReason
    if (queued) slot.waitedFor = busiestDimension(lane.meter.usedFractions(lane.limits()))
    return slot
  }

  private onRefusal(lane: Lane, refusal: UpstreamRefusal, callId: string): void {
    const effect = applyRefusal(lane, refusal, {
      callId,
      now: Date.now(),
      disableMs: this.options.upstream.disableMs,
      timeScale: this.timeScale,
      emit: this.emit,
    })
    if (this.sharedState.size === 0) return
    if (effect.accountDisableMs > 0) {
      // A whole-account disable is written to each lane of the account: every script keeps to its lane's slot.
      for (const other of this.lanes) if (other.owner === lane.owner) void this.sharedState.get(other)?.publish(effect)
    } else if (effect.coolMs > 0 || effect.disableMs > 0 || effect.burst) {
      void this.sharedState.get(lane)?.publish(effect)
    }
  }

  /** The key tag of one lane: one hash tag, so every key of a lane's scripts lands in one cluster slot. */
  private laneTag(accountId: string, model: string): string {
    return `${this.store.prefix}:up:{${accountId}|${model}}`
  }

  /**
   * The lane's shared state: cooldowns and pace shared by every key of the account (Qwen's limits
   * are the account's), disables kept per set of API keys under their fingerprint (12 hex digits of
   * the SHA-256 of the sorted keys, not a key): a key Qwen refused as invalid disables its account for
   * an hour, and the corrected key, deployed on the same Redis, must not inherit that hour (a billing
   * state, kept by the account, is learned again by the first call refused for it).
   */
  private sharedStateFor(
    account: { id: string; apiKeys: readonly string[] },
    model: string,
    apply: (view: SharedLaneView) => void,
    pace: { floor: number; step: number; secondMs: number },
  ): SharedLaneState | undefined {
    if (!this.store.redis) return undefined
    const keys = [...new Set(account.apiKeys)].sort().join('\n')
    const keyPrint = createHash('sha256').update(keys).digest('hex').slice(0, 12)
    const tag = this.laneTag(account.id, model)
    return new SharedLaneState(this.store, `${tag}:s`, `${tag}:d:${keyPrint}`, apply, pace)
  }

  private meterFor(accountId: string, model: string, shared: SharedLaneState | undefined): Meter {
    const memory = new MemoryMeter(() => Date.now())
    if (!this.store.redis) return memory
    const tag = this.laneTag(accountId, model)
    return new RedisMeter(this.store, [`${tag}:h`, `${tag}:l`], memory, shared?.gate)
  }
}

/** Whether the caller of an acquire went away (aborted) or gave it up (abandoned). */
function isGone(req: AcquireRequest): boolean {
  return req.signal?.aborted === true || req.abandoned !== undefined
}

function throwIfGone(req: AcquireRequest): void {
  if (req.signal?.aborted) throw req.signal.reason
  if (req.abandoned) throw req.abandoned.reason
}

/** How long a shared queue seen holding other waiters keeps new calls of its model from the fast path. */
const SHARED_BUSY_MS = 1_000

/** tryNow's `blocked` when no earlier waiter holds a model. */
const NOTHING_BLOCKED: ReadonlySet<string> = new Set()

/**
 * A request Qwen refused with a 4xx was not served: keep it in the request count (conservative, it
 * may have been counted) but not its tokens. After a 5xx, a timeout or an error mid-stream the
 * tokens may have been spent: keep the reservation.
 */
function tokensAfterRefusal(refusal: UpstreamRefusal, reserved: number): number {
  return refusal.status >= 400 && refusal.status < 500 ? 0 : reserved
}

function unavailable(waitMs: number, message: string): QwenGuardError {
  return upstreamUnavailable(message, Math.max(1, Math.ceil(waitMs)))
}

/** The dimension with the largest fraction used (what a queued call most likely waited for). */
function busiestDimension(used: DimensionFractions): 'rpm' | 'tpm' | 'rps' | 'tps' {
  let best: 'rpm' | 'tpm' | 'rps' | 'tps' = 'rpm'
  for (const dimension of ['tpm', 'rps', 'tps'] as const) if (used[dimension] > used[best]) best = dimension
  return best
}
