/**
 * The jitter allowance of the pacer, measured: how much later than the meter's grant a send reaches
 * the wire, and how much that delay varies from one send to the next.
 *
 * Why the variation is what matters: upstream counts a request when it arrives, the meter when it
 * granted it. With arrival a = g + d, two requests i (earlier) and j land in one upstream window of
 * length W only if g_j - g_i < W + d_i - d_j. A meter window of W + J, J >= max(d_i - d_j), therefore
 * counts every pair that upstream counts together, and upstream never sees more than the limit. A
 * delay every send shares (a steady Redis round trip) moves all arrivals alike and costs nothing.
 *
 * One sample per send: local time from the moment the meter was ASKED for the slot (an upper bound
 * of the grant: on Redis the grant happened somewhere inside that round trip, on Redis's clock), less
 * how far back the meter recorded the send (sliding-log.ts, "Entry time"), to the
 * moment the request's body is written to the socket, as undici (Node's fetch) reports it on its
 * diagnostics channels (wire-delays.ts). Each request undici creates for the upstream's origin is
 * matched to the oldest send not yet matched: fetch takes the same steps for every call, so requests
 * are created in the order their sends started. (AsyncLocalStorage would match exactly, but on
 * Node 20 it turns on async hooks for the whole process: every promise of the app paid for it
 * (`pnpm bench client`, bench/RESULTS.md).) A request to the same origin that is not the guard's
 * (the app's own client to Qwen, another guard in the process) can take a send's place: its
 * sample is then early, which lowers the minimum and so widens the allowance; the send it displaced
 * goes unsampled (its own stall is neither measured nor moved). With a custom
 * `upstream.fetch` that reports nothing, to the first turn of the event loop after `fetch()` was
 * called. A busy loop, a slow quota round trip, a queue wake-up, a connection being opened all show
 * up here. The allowance is the spread of the samples of the last 30 s, plus the clock's resolution:
 *   J = p99 - min + 1 ms
 * (the 1 ms: the memory meter's clock ticks in whole milliseconds). It rises at once when a sample is
 * later than the allowance covers, and is recomputed at most every 250 ms otherwise (a lane's limits,
 * and the Redis meter's argument list, are rebuilt only when it changes). The first 8 sends of a
 * process are not sampled: they pay one-time costs (module loading, JIT, new connections) and a cold
 * lane is ramping up anyway, far from its limits. What happens after the wire (network, the
 * upstream's own reading) is not measurable from here: the safety margin's stretch stays the floor for
 * it (pace-limits.ts).
 *
 * A send later than the allowance: a p99 leaves the rarest delays out by design (a stalled event loop,
 * a new TLS connection, a garbage collection), and any allowance is measured after the sends it
 * should have covered. Such a send would bunch at upstream with the ones granted after it: a meter
 * that still counts it at its grant lets a full window of later sends beside it. So when its sample is
 * later than the allowance then in force covers (delay - min + resolution > J, with the min J was
 * computed from, or a lower sample since), the meter records it
 * again at its now (`MeterTicket.move`: the entry stops counting where it was and counts from the
 * moment it left, which is where upstream sees it), and every later take counts it there. Moving a
 * send later never lowers what a window ending at or after the move counts, so no take after it can
 * over-admit; takes before it already counted the send at its grant (for any delay under a window, counted
 * to when the move reaches the meter: on Redis a round trip after the write).
 * It costs one meter command (a Redis round trip on Redis) for about 1 % of sends (those past the
 * p99) and for a process's first sends (the warm-up's, whose whole delay counts: nothing to compare
 * it with yet), none for the rest. Delays of a whole window (one second) or more are not covered: a
 * take made between the grant's window and the move counted the send nowhere (from the move on it
 * counts, also once its entry has left the log: the ticket's counts are recorded then).
 */
import { performance } from 'node:perf_hooks'

export interface SendDelayOptions {
  /** Samples kept (the most recent sends). Default 512. */
  samples?: number
  /** Samples older than this (real ms) no longer count. Default 30,000. */
  maxAgeMs?: number
  /** The first sends of a process whose samples are ignored (module loading, JIT, new connections). Default 8. */
  warmUp?: number
  /** Quantile of the delays taken as the late end. Default 0.99. */
  quantile?: number
  /** Real ms between recomputations when no sample exceeds the allowance. Default 250. */
  refreshMs?: number
  /** Added to every allowance: the resolution of the meter's clock, real ms. Default 1. */
  resolutionMs?: number
  /** Monotonic clock, real ms. Default `performance.now`. */
  now?: () => number
  /** Runs `fn` at the next turn of the event loop. Default `setImmediate`. */
  nextTurn?: (fn: () => void) => void
}

export class SendDelays {
  private readonly ring: DelayRing
  private allowance: number
  /**
   * The smallest of the samples the allowance in force was computed from (the last maxAgeMs) and of
   * those taken since (0 before any): a send is late when its delay less this is more than the
   * allowance covers. Not the ring's minimum, which may be older (the ring keeps 512 sends, more than
   * 30 s of them below 17 sends a second): compared with it every send of a lane whose delays rose
   * since (a slower store, larger bodies) read late.
   */
  private floor = 0
  private computedAt = -Infinity
  private dirty = false
  private readonly quantile: number
  private readonly refreshMs: number
  private readonly resolutionMs: number
  readonly now: () => number
  private readonly nextTurn: (fn: () => void) => void
  /** Sends whose request the HTTP client has not reported yet, oldest first. */
  private readonly unmatched: PendingSend[] = []

  constructor(options: SendDelayOptions = {}) {
    this.ring = new DelayRing(Math.max(2, options.samples ?? 512), options.maxAgeMs ?? 30_000, options.warmUp ?? 8)
    this.quantile = options.quantile ?? 0.99
    this.refreshMs = options.refreshMs ?? 250
    this.resolutionMs = options.resolutionMs ?? 1
    this.now = options.now ?? (() => performance.now())
    this.nextTurn = options.nextTurn ?? ((fn) => void setImmediate(fn))
    this.allowance = this.resolutionMs
  }

  /**
   * A send is about to go out (`fetch()` is called right after, in the same synchronous turn) for a
   * slot whose meter take was asked for at `askedAt` (this clock's ms, less the take's backdating). Its sample is taken when the
   * HTTP client reports the body written (`wired`), or, when the client reports nothing (a custom
   * fetch), at the next turn of the event loop. `onLate` is called then if the sample is later than
   * the allowance covers (see "A send later than the allowance" above).
   */
  sent(askedAt: number, onLate?: () => void): void {
    const pending: PendingSend = { askedAt, seen: false, done: false, onLate }
    this.unmatched.push(pending)
    this.nextTurn(() => {
      if (pending.seen) return
      this.finish(pending)
      const at = this.unmatched.indexOf(pending) // the head, unless a later send was matched first
      if (at >= 0) this.unmatched.splice(at, 1)
    })
  }

  /**
   * The HTTP client created a request to the upstream's origin (wire-delays.ts): it belongs to the
   * oldest send not matched yet, returned; undefined when there is none.
   */
  claim(): PendingSend | undefined {
    // Only unfinished sends are listed: one sampled at the next turn leaves the list then.
    const pending = this.unmatched.shift()
    if (pending) pending.seen = true
    return pending
  }

  /** The request of `pending` is on the wire: its sample is taken now. */
  wired(pending: PendingSend): void {
    this.finish(pending)
  }

  /** One grant -> wire delay, real ms (negative values count as 0). */
  record(delayMs: number): void {
    const delay = Number.isFinite(delayMs) ? Math.max(0, delayMs) : 0
    if (!this.ring.push(delay, this.now())) return
    this.dirty = true
    this.floor = Math.min(this.floor, delay) // a lower one counts at once (the allowance widens at the refresh)
    // Later than the allowance covers: take it into account at the next read.
    if (delay - this.floor + this.resolutionMs > this.allowance) this.computedAt = -Infinity
  }

  /** The jitter allowance, real ms: how much the meter's windows must outlast upstream's. */
  allowanceMs(): number {
    const now = this.now()
    if (this.dirty && now - this.computedAt >= this.refreshMs) {
      // Rounded up to 0.1 ms: a lane's limits are rebuilt only when the allowance really moves.
      const { spread, min } = this.ring.spread(this.quantile, now)
      this.allowance = Math.ceil((spread + this.resolutionMs) * 10) / 10
      if (min !== undefined) this.floor = min
      this.computedAt = now
      this.dirty = false
    }
    return this.allowance
  }

  private finish(pending: PendingSend): void {
    if (pending.done) return
    pending.done = true
    const delay = this.now() - pending.askedAt
    // Read before the sample joins the ring: the allowance the sends around this one were paced with,
    // less the minimum it was computed with.
    const allowance = this.allowanceMs()
    const late = delay - this.floor + this.resolutionMs > allowance
    this.record(delay)
    if (late) pending.onLate?.()
  }
}

/** One send between `sent()` and its sample. */
export interface PendingSend {
  askedAt: number
  /** Called when its sample is later than the allowance covers (the meter records the send again). */
  onLate?: (() => void) | undefined
  /** The HTTP client created its request (then the body's write ends it). */
  seen: boolean
  done: boolean
}

/** The last `n` delays of one kind, each with the time it was taken. */
class DelayRing {
  private readonly ring: Float64Array
  private readonly times: Float64Array
  /** Where `spread` sorts the recent samples: allocated once (it runs every few hundred sends). */
  private readonly scratch: Float64Array
  private size = 0
  private next = 0
  private skipped = 0

  constructor(
    n: number,
    private readonly maxAgeMs: number,
    private readonly warmUp: number,
  ) {
    this.ring = new Float64Array(n)
    this.times = new Float64Array(n)
    this.scratch = new Float64Array(n)
  }

  /** Adds a sample; false while warming up (ignored). */
  push(delay: number, now: number): boolean {
    if (this.skipped < this.warmUp) {
      this.skipped++
      return false
    }
    this.ring[this.next] = delay
    this.times[this.next] = now
    this.next = (this.next + 1) % this.ring.length
    if (this.size < this.ring.length) this.size++
    return true
  }

  /**
   * quantile(q) - min over the samples younger than maxAgeMs, and that min; a spread of 0 and no min
   * when there are none.
   */
  spread(q: number, now: number): { spread: number; min: number | undefined } {
    let count = 0
    for (let i = 0; i < this.size; i++) if (now - this.times[i]! < this.maxAgeMs) this.scratch[count++] = this.ring[i]!
    if (count === 0) return { spread: 0, min: undefined }
    const recent = this.scratch.subarray(0, count).sort() // a typed array sorts numerically, in place
    return { spread: recent[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))]! - recent[0]!, min: recent[0]! }
  }
}
