/**
 * A meter shared through Redis: the sliding log of meter-lua.ts, run atomically by EVALSHA (EVAL
 * once when the server does not know the script yet). Every command goes through the guard's
 * store (store.ts: timeout, the one health tracker, probes during an outage), and a failure follows
 * the store's `onError` policy: 'open' paces on this instance's own memory meter until Redis
 * answers again, 'closed' refuses with 503 `store_unavailable`.
 */
import { createHash } from 'node:crypto'
import type { GuardStore, RedisConnection } from '../store.js'
import { METER_LUA } from './meter-lua.js'
import { MemoryMeter, SendCounts, type Meter, type MeterTake, type MeterTicket } from './meter.js'
import type { PaceLimits } from './pace-limits.js'
import type { MeterGate } from './shared-lane-state.js'
import { MeterView } from './meter-view.js'
import type { BlockReason, DimensionFractions } from './sliding-log.js'

const SCRIPT_SHA = createHash('sha1').update(METER_LUA).digest('hex')

export class RedisMeter implements Meter {
  /**
   * Sends paced on the memory meter (an outage) from this id on are not yet in the Redis log: it
   * takes them over before its next take. The memory meter keeps its log (its own windows still hold
   * them, for a next outage, and its tickets still settle there); only the id moves.
   */
  private handedOverUpTo = 0
  private pacedInMemory = false
  private handingOver: Promise<void> | undefined
  /** The limits of the last take paced in memory: a hand-over on recovery reads its windows with them. */
  private memoryLimits: PaceLimits | undefined
  /**
   * Sends paced in memory and handed over, by memory id: their tickets in the shared log, so that
   * their calls' settles (up or down) reach it (until then the shared log counts their reservation).
   */
  private readonly sharedTickets = new Map<number, string>()
  private lastFraction = 0
  private lastFractions: DimensionFractions = { rpm: 0, tpm: 0, rps: 0, tps: 0 }
  /**
   * This process's last view of the shared meter, sent with every command: when Redis has lost both
   * keys (a flush, a restart without persistence), the first command after seeds the new meter with
   * it (meter-lua.ts, "Both keys lost"), since those sends are still in Qwen's windows.
   */
  private readonly view = new MeterView()
  /** A refresh (a dry take carrying the view) is on its way. */
  private refreshing = false
  /** When this process last sent on the meter (epoch ms), and the timer reporting its view until that leaves the window. */
  private ownSentAt = 0
  private reportTimer: NodeJS.Timeout | undefined
  private closed = false
  /** The view (its `at`) the memory meter was last seeded with: an outage seeds it once. */
  private seededAt = 0
  /**
   * The memory meter's entries below this id (earlier seeds, sends handed over) are in the view:
   * it was read from Redis after all of them were there. The next outage's seed replaces them.
   */
  private viewCoversBelow = 0
  private readonly redis: RedisConnection

  constructor(
    private readonly store: GuardStore,
    private readonly keys: [hash: string, list: string],
    private readonly fallback: MemoryMeter,
    /** The lane's shared state (shared-lane-state.ts): takes run behind its gate. */
    private readonly gate?: MeterGate,
  ) {
    this.redis = store.redis as RedisConnection
    // Handed over as soon as Redis answers again, not only at this lane's next take: the other
    // instances' takes must count them from then on.
    store.onRecovered(() => {
      const limits = this.memoryLimits
      if (!this.pacedInMemory || !limits) return
      void this.store.run(this.keys[0], () => this.handOverOnce(limits)).catch(() => undefined)
    })
  }

  /** The hand-over, or the one already running. */
  private handOverOnce(limits: PaceLimits): Promise<void> {
    return (this.handingOver ??= this.handOver(limits))
  }

  async take(tokens: number, limits: PaceLimits, dry = false): Promise<MeterTake> {
    const args = [dry ? 'dry' : 'take', ...limitArgs(limits), ...this.view.args(), String(tokens)]
    return this.store.attempt(
      this.keys[0],
      async () => {
        if (this.pacedInMemory) await this.handOverOnce(limits)
        return this.decode(await this.sendTake(args, limits), limits, tokens)
      },
      () => {
        if (!dry) return this.takeInMemory(tokens, limits)
        this.seedMemory(limits)
        return this.fallback.takeSync(tokens, limits, true)
      },
      // Taken after its timeout: the call was paced in memory (or refused) meanwhile, so nobody
      // will send on this take. Settle it to nothing.
      (late) => {
        if (late.ok) void late.ticket.recount(0, 0)
      },
    )
  }

  /**
   * Redis answers again: the sends this process paced on its memory meter meanwhile are added to the
   * shared log (they are in Qwen's windows too: forgotten, one instance alone would send a whole
   * minute's limit beside them). Rejects (the take falls back again, the sends kept for the next
   * try) when Redis fails again.
   */
  private async handOver(limits: PaceLimits): Promise<void> {
    try {
      const { sends, end } = this.fallback.recent(limits, this.handedOverUpTo)
      if (sends.length > 0) {
        const triples = sends.flatMap((s) => [String(s.ageMs), String(s.requests), String(s.tokens)])
        const reply = await this.send([
          'absorb',
          ...limitArgs(limits),
          ...this.view.args(),
          String(sends.length),
          ...triples,
        ])
        const [incarnation, first] = [String(reply[1]), Number(reply[2])]
        this.view.incarnation = incarnation
        sends.forEach((sent, k) => {
          const shared = `${incarnation}.${first + k}`
          const now = this.fallback.log.countsOf(sent.id)
          // Settled while the hand-over ran: the shared log gets what it counts now.
          if (now && (now.requests !== sent.requests || now.tokens !== sent.tokens))
            void this.settleShared(shared, now.requests, now.tokens, limits)
          else if (now) this.sharedTickets.set(sent.id, shared)
        })
      }
      this.handedOverUpTo = end
      // A take paced in memory while the hand-over ran (Redis slow again) is handed over next time.
      this.pacedInMemory = this.fallback.log.nextId() > end
    } finally {
      this.handingOver = undefined
    }
  }

  /**
   * An outage begins: the memory meter starts from this process's last view of the shared minute
   * window (what every instance sent that Qwen still counts), not from nothing, once per view. The
   * seed is not handed over on recovery (the shared log had it): only when every earlier send paced
   * in memory has been, so the hand-over's next id can move past it.
   */
  private seedMemory(limits: PaceLimits): void {
    const v = this.view
    const age = Date.now() - v.at
    if (v.at === this.seededAt || age >= limits.minuteWindowMs || (v.requests === 0 && v.tokens === 0)) return
    if (this.handedOverUpTo !== this.fallback.log.nextId()) return
    // An earlier outage's seed and sends are in this view too: counted beside it, they filled the
    // memory minute twice over and held the lane (up to a minute) though Qwen had room.
    if (this.viewCoversBelow === this.fallback.log.nextId()) this.fallback.forget(this.viewCoversBelow, limits)
    this.seededAt = v.at
    // The sends already out of the rate window when the view was read, dated at its edge then (or at
    // the newest entry, if older: the safe side for the minute), then the second's own: counted whole
    // as of the view, the minute's sends held the outage's first calls for up to a second.
    const older = [Math.max(0, v.requests - v.secondRequests), Math.max(0, v.tokens - v.secondTokens)] as const
    const olderAge = Date.now() - Math.min(v.at, v.seenAt - limits.rateWindowMs)
    if (older[0] > 0 || older[1] > 0) this.fallback.seed(olderAge, older[0], older[1], limits)
    if (v.secondRequests > 0 || v.secondTokens > 0) this.fallback.seed(age, v.secondRequests, v.secondTokens, limits)
    this.handedOverUpTo = this.fallback.log.nextId()
  }

  /** A take paced in memory (an outage); its ticket settles the shared log too once handed over. */
  private takeInMemory(tokens: number, limits: PaceLimits): MeterTake {
    this.seedMemory(limits)
    this.pacedInMemory = true
    this.memoryLimits = limits
    const id = this.fallback.log.nextId()
    const taken = this.fallback.takeSync(tokens, limits)
    if (!taken.ok) return taken
    const memory = taken.ticket
    const ticket: MeterTicket = {
      recount: async (requests, used) => {
        await memory.recount(requests, used)
        const shared = this.sharedTickets.get(id)
        if (shared === undefined) return // not handed over yet: the hand-over takes what it counts then
        this.sharedTickets.delete(id)
        await this.settleShared(shared, requests, used, limits)
      },
    }
    return { ...taken, ticket }
  }

  /**
   * Settles a send of the shared log to what its call used. Never rejects: a lost settle leaves the
   * reservation counted until it leaves the window (the store's health has reported the failure):
   * the safe side, but for a call that used more than it reserved.
   */
  private settleShared(ticket: string, requests: number, used: number, limits: PaceLimits): Promise<void> {
    return this.store
      .run(
        this.keys[0],
        () => this.send(['settle', ...limitArgs(limits), ...this.view.args(), ticket, String(requests), String(used)]),
        undefined,
        true,
      )
      .then(
        () => undefined,
        () => undefined,
      )
  }

  /**
   * Records a send of the shared log again at Redis's now (it left late: SlidingLog.move); `counts`:
   * what its ticket counts (for an entry no longer in the list). The moved send's new ticket, or
   * undefined when nothing moved. Never rejects: a lost move leaves the send
   * where it was recorded (the store's health has reported the failure); one answered after its
   * timeout still hands its ticket to `late`.
   */
  private moveShared(
    ticket: string,
    counts: SendCounts,
    limits: PaceLimits,
    late: (moved: string | undefined) => void,
  ) {
    const decodeMove = (reply: unknown[]) => (reply[1] ? String(reply[1]) : undefined)
    const args = [
      'move',
      ...limitArgs(limits),
      ...this.view.args(),
      ticket,
      String(counts.requests),
      String(counts.tokens),
    ]
    return this.store
      .run(
        this.keys[0],
        () => this.send(args),
        (reply) => late(decodeMove(reply)),
      )
      .then(decodeMove, () => undefined)
  }

  usedFraction(limits: PaceLimits): number {
    return this.store.health.downFor(this.keys[0]) ? this.fallback.usedFraction(limits) : this.lastFraction
  }

  usedFractions(limits: PaceLimits): DimensionFractions {
    return this.store.health.down ? this.fallback.usedFractions(limits) : this.lastFractions
  }

  refresh(limits: PaceLimits): void {
    if (this.closed || this.refreshing || Date.now() - this.view.seenAt < limits.secondMs / 4) return
    this.refreshing = true
    void this.take(0, limits, true)
      .catch(() => undefined)
      .finally(() => (this.refreshing = false))
  }

  /**
   * This process sent (an admitted take): until that send leaves the minute window, its view is
   * refreshed every half second when nothing else reads it (an idle instance): a meter Redis lost
   * holds its lane a second for the views of every process that sent in its window, and one with no
   * call to make would otherwise never send its own.
   */
  private reportOwnSends(limits: PaceLimits): void {
    this.ownSentAt = Date.now()
    if (this.reportTimer || this.closed) return
    const tick = () => {
      this.reportTimer = undefined
      if (this.closed || Date.now() - this.ownSentAt >= limits.minuteWindowMs) return
      this.refresh(limits)
      this.reportTimer = setTimeout(tick, limits.secondMs / 2).unref()
    }
    this.reportTimer = setTimeout(tick, limits.secondMs / 2).unref()
  }

  /** Stops reporting the view (the guard is closed). */
  close(): void {
    this.closed = true
    clearTimeout(this.reportTimer)
  }

  /**
   * Keeps a reply of the meter as the view; an admitted take is a send of this process's (reported
   * while it is in the window). A reply read after every memory entry reached Redis covers them: the
   * next outage's seed replaces them (earlier seeds came from a view; sends paced in memory were
   * handed over, and this command ran after that hand-over: one connection).
   */
  private observe(reply: unknown[], limits: PaceLimits): void {
    if (this.view.observe(reply, limits)) this.reportOwnSends(limits)
    const nextId = this.fallback.log.nextId()
    if (this.handedOverUpTo === nextId) this.viewCoversBelow = nextId
  }

  private decode(reply: unknown[], limits: PaceLimits, tokens: number): MeterTake {
    // The five fractions (busiest, rps, tps, rpm, tpm) end the reply (meter-lua.ts).
    const at = reply.length - 5
    const fraction = Number(reply[at])
    this.lastFraction = fraction
    this.lastFractions = {
      rps: Number(reply[at + 1]),
      tps: Number(reply[at + 2]),
      rpm: Number(reply[at + 3]),
      tpm: Number(reply[at + 4]),
    }
    if (Number(reply[0]) !== 1) {
      const wait = Number(reply[1])
      return {
        ok: false,
        waitMs: wait < 0 ? Infinity : wait,
        reason: String(reply[2]) as BlockReason,
        usedFraction: fraction,
      }
    }
    let shared = String(reply[1])
    let moving: Promise<void> | undefined
    /** What the settle wrote (once the move was asked for): repeated on an entry moved after its timeout. */
    let settled: [requests: number, used: number] | undefined
    const moved = (ticket: string | undefined) => {
      if (ticket) shared = ticket
    }
    // Redis ran the move after its timeout: a settle sent meanwhile went to the old entry (behind the
    // move on the connection), which the script then ignores (it counts nothing since the move), so
    // the settle is repeated on the moved one. Before, it counted the send there again, beside the
    // moved entry's reservation (two requests for one, for up to a minute; a cancel counted one).
    const movedLate = (ticket: string | undefined) => {
      if (!ticket || ticket === shared) return
      shared = ticket
      if (settled) void this.settleShared(ticket, settled[0], settled[1], limits)
    }
    const counts = new SendCounts(tokens)
    const ticket: MeterTicket = {
      recount: async (requests, used) => {
        counts.recount(requests, used)
        await moving // a settle reaches the moved entry
        if (moving) settled = [requests, used]
        return this.settleShared(shared, requests, used, limits)
      },
      move: () => (moving ??= this.moveShared(shared, counts, limits, movedLate).then(moved)),
    }
    // How far back the entry was recorded (0 for a dry take).
    return { ok: true, usedFraction: fraction, ticket, lateMs: Number(reply[2]) }
  }

  /**
   * A take, behind the lane's gate when it has one: the gate's part of the reply updates the lane,
   * and when the lane is cooling or disabled the meter did not run (a 'spacing' wait until then).
   */
  private async sendTake(args: readonly string[], limits: PaceLimits): Promise<unknown[]> {
    const gate = this.gate
    if (!gate) {
      const reply = await this.send(args)
      this.observe(reply, limits)
      return reply
    }
    const reply = (await this.evalScript(gate.sha, gate.script, [...this.keys, ...gate.keys], args)) as unknown[]
    const outMs = gate.read(reply[0])
    if (Array.isArray(reply[1])) {
      this.observe(reply[1] as unknown[], limits)
      return reply[1] as unknown[]
    }
    // The meter did not run: its last fractions stand (decode reads the five numbers ending a reply).
    const f = this.lastFractions
    return [0, String(outMs ?? 0), 'spacing', this.lastFraction, f.rps, f.tps, f.rpm, f.tpm].map(String)
  }

  private async evalScript(sha: string, script: string, keys: string[], args: readonly string[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!String((error as Error)?.message).includes('NOSCRIPT')) throw error
      return this.redis.eval(script, keys.length, ...keys, ...args)
    }
  }

  /** EVALSHA, or EVAL once when the server does not know the script yet. */
  private async send(args: readonly string[]): Promise<unknown[]> {
    try {
      return (await this.redis.evalsha(SCRIPT_SHA, 2, ...this.keys, ...args)) as unknown[]
    } catch (error) {
      if (!String((error as Error)?.message).includes('NOSCRIPT')) throw error
      return (await this.redis.eval(METER_LUA, 2, ...this.keys, ...args)) as unknown[]
    }
  }
}

/** The script's limit arguments, as text. A lane's limits object changes only with its pace. */
const argsByLimits = new WeakMap<PaceLimits, readonly string[]>()

export function limitArgs(l: PaceLimits): readonly string[] {
  let args = argsByLimits.get(l)
  if (!args) {
    args = [
      l.rateWindowMs,
      l.minuteWindowMs,
      l.rampWindowMs,
      l.rampPairWindowMs,
      l.rps,
      l.tps,
      l.rpm,
      l.tpm,
      l.rampInitial,
      l.rampFactor,
      l.spacingMs,
      l.tokenSpacingMs,
      l.secondMs,
      l.jitterMs,
      l.backdateMs,
    ].map((n) => String(n))
    argsByLimits.set(l, args)
  }
  return args
}
