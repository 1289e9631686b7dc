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
 * One sample per send (`sent`): local time from the moment the meter was ASKED for the slot (an upper
 * bound of the grant: on Redis the grant happened somewhere inside that round trip, on Redis's clock)
 * to the first turn of the event loop after `fetch()` was called (when the request can actually be
 * written: a busy loop, a slow quota round trip, a queue wake-up all show up here). The allowance is
 *   J = quantile(samples, 0.99) - min(samples) + 1 ms
 * over the last 512 sends (the 1 ms: the memory meter's clock ticks in whole milliseconds). It rises at
 * once when a send is later than the allowance covers, and is recomputed at most every 250 ms
 * otherwise (a lane's limits, and the Redis meter's argument list, are rebuilt only when it changes).
 * What happens after the wire (network, the upstream's own reading) is not measurable from here: the
 * safety margin's stretch stays the floor for it (pace-limits.ts).
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
  private readonly ring: Float64Array
  private size = 0
  private next = 0
  private allowance: number
  private computedAt = -Infinity
  private dirty = false
  private readonly quantile: number
  private readonly refreshMs: number
  private readonly resolutionMs: number
  readonly now: () => number
  private readonly nextTurn: (fn: () => void) => void

  constructor(options: SendDelayOptions = {}) {
    this.ring = new Float64Array(Math.max(2, options.samples ?? 512))
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

  /** One measured delay, real ms (negative values count as 0). */
  record(delayMs: number): void {
    const delay = Number.isFinite(delayMs) ? Math.max(0, delayMs) : 0
    this.ring[this.next] = delay
    this.next = (this.next + 1) % this.ring.length
    if (this.size < this.ring.length) this.size++
    this.dirty = true
    // Later than the allowance covers (measured from the current floor): take it into account now.
    if (delay - this.floor() + this.resolutionMs > this.allowance) this.computedAt = -Infinity
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

  private floor(): number {
    let min = Infinity
    for (let i = 0; i < this.size; i++) min = Math.min(min, this.ring[i]!)
    return Number.isFinite(min) ? min : 0
  }

  private compute(): number {
    if (this.size === 0) return this.resolutionMs
    const sorted = Float64Array.from(this.ring.subarray(0, this.size)).sort()
    const high = sorted[Math.min(this.size - 1, Math.ceil(this.quantile * this.size) - 1)]!
    // Rounded up to 0.1 ms: a lane's limits are rebuilt only when the allowance really moves.
    return Math.ceil((high - sorted[0]! + this.resolutionMs) * 10) / 10
  }
}
