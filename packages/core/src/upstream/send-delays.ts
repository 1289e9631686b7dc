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
 Two measured parts, each over its last 512 samples:
 *   - grant -> send (`sent`): local time from the moment the meter was ASKED for the slot (an upper
 *     bound of the grant: on Redis the grant happened somewhere inside that round trip, on Redis's
 *     clock) to the first turn of the event loop after `fetch()` was called. A busy loop, a slow
 *     quota round trip, a queue wake-up all show up here.
 *   - send -> wire (`wire`, wire-delays.ts): from undici creating the request to its body being
 *     written to the socket (a connection being opened, a busy loop), for requests to the upstream's
 *     origin. Absent with a custom `upstream.fetch` that is not undici's.
 * The allowance is the sum of each part's spread, plus the clock's resolution:
 *   J = (p99 - min)(grant -> send) + (p99 - min)(send -> wire) + 1 ms
 * (the 1 ms: the memory meter's clock ticks in whole milliseconds). It rises at once when a sample is
 * later than the allowance covers, and is recomputed at most every 250 ms otherwise (a lane's limits,
 * and the Redis meter's argument list, are rebuilt only when it changes). What happens after the wire
 * (network, the upstream's own reading) is not measurable from here: the safety margin's stretch stays
 * the floor for it (pace-limits.ts).
 */
import { performance } from 'node:perf_hooks'

export interface SendDelayOptions {
  /** Samples kept (the most recent sends). Default 512. */
  samples?: number
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
  private readonly grant: DelayRing
  private readonly wired: DelayRing
  private allowance: number
  private computedAt = -Infinity
  private dirty = false
  private readonly quantile: number
  private readonly refreshMs: number
  private readonly resolutionMs: number
  readonly now: () => number
  private readonly nextTurn: (fn: () => void) => void

  constructor(options: SendDelayOptions = {}) {
    const samples = Math.max(2, options.samples ?? 512)
    this.grant = new DelayRing(samples)
    this.wired = new DelayRing(samples)
    this.quantile = options.quantile ?? 0.99
    this.refreshMs = options.refreshMs ?? 250
    this.resolutionMs = options.resolutionMs ?? 1
    this.now = options.now ?? (() => performance.now())
    this.nextTurn = options.nextTurn ?? ((fn) => void setImmediate(fn))
    this.allowance = this.resolutionMs
  }

  /**
   * A send is about to go out (`fetch()` is being called) for a slot whose meter take was asked for
   * at `askedAt` (this clock's ms). The sample is taken at the next turn of the event loop.
   */
  sent(askedAt: number): void {
    this.nextTurn(() => this.record(this.now() - askedAt))
  }

  /** One grant -> send delay, real ms (negative values count as 0). */
  record(delayMs: number): void {
    this.add(this.grant, delayMs)
  }

  /** One send -> wire delay, real ms (negative values count as 0). */
  wire(delayMs: number): void {
    this.add(this.wired, delayMs)
  }

  /** The jitter allowance, real ms: how much the meter's windows must outlast upstream's. */
  allowanceMs(): number {
    const now = this.now()
    if (this.dirty && now - this.computedAt >= this.refreshMs) {
      this.allowance = this.compute()
      this.computedAt = now
      this.dirty = false
    }
    return this.allowance
  }

  private add(ring: DelayRing, delayMs: number): void {
    const delay = Number.isFinite(delayMs) ? Math.max(0, delayMs) : 0
    ring.push(delay)
    this.dirty = true
    // Later than the allowance covers: take it into account at the next read.
    if (delay - ring.min() + this.resolutionMs > this.allowance) this.computedAt = -Infinity
  }

  private compute(): number {
    const spread = this.grant.spread(this.quantile) + this.wired.spread(this.quantile)
    // Rounded up to 0.1 ms: a lane's limits are rebuilt only when the allowance really moves.
    return Math.ceil((spread + this.resolutionMs) * 10) / 10
  }
}

/** The last `n` delays of one kind. */
class DelayRing {
  private readonly ring: Float64Array
  private size = 0
  private next = 0
  private low = Infinity

  constructor(n: number) {
    this.ring = new Float64Array(n)
  }

  push(delay: number): void {
    const replaced = this.size === this.ring.length ? this.ring[this.next]! : Infinity
    this.ring[this.next] = delay
    this.next = (this.next + 1) % this.ring.length
    if (this.size < this.ring.length) this.size++
    if (delay <= this.low) this.low = delay
    else if (replaced === this.low) this.low = this.scanMin() // the minimum left the ring
  }

  min(): number {
    return this.size === 0 ? 0 : this.low
  }

  /** quantile(q) - min over the ring; 0 when empty. */
  spread(q: number): number {
    if (this.size === 0) return 0
    const sorted = Float64Array.from(this.ring.subarray(0, this.size)).sort()
    return sorted[Math.min(this.size - 1, Math.max(0, Math.ceil(q * this.size) - 1))]! - sorted[0]!
  }

  private scanMin(): number {
    let min = Infinity
    for (let i = 0; i < this.size; i++) min = Math.min(min, this.ring[i]!)
    return min
  }
}
