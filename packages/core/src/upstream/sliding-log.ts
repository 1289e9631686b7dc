/**
 * The in-memory pace of one account x model: a log of sends (time, requests, tokens), oldest first,
 * with one cursor and running sums per window, plus a GCRA emission time for request spacing.
 * Every check is O(1) amortised: time only moves forward, so cursors only move forward. The Redis
 * meter (redis-meter.ts) runs the same algorithm in Lua; keep the two in step.
 *
 * Why a log and not a GCRA for tokens: a GCRA that lets one large request through (tolerance of
 * about a second of tokens) also lets a second second's worth through right behind it, i.e. up to
 * 2x TPS inside one sliding second. A log with exact window sums admits a request only when every
 * sliding window, including it, stays within its limit; that is the definition of the limit, so it
 * cannot over-admit, whatever the arrival pattern:
 *   take() at time t admits only if  sum(window (t - W, t]) + cost <= L  for every window, and a
 *   window ending later than t only loses entries older than its start, so every window that ends
 *   at an admission holds <= L; a window ending elsewhere holds no more than the one ending at its
 *   last admission. Hence no window of length W ever holds more than L.
 * Spacing (GCRA) only smooths sends inside a window (Qwen's burst protection dislikes clumps); the
 * bound above does not rely on it. A request's interval is the larger of its share of the request
 * rate, W / (m L), and its share of the token rate, tokens x W / (m TPS); tolerance half of it. So a
 * token-bound lane sends evenly instead of a second's worth of tokens at once, then nothing (which
 * also kept the ramp rule below waiting at each window boundary). A settle gives the unused share
 * back (settle to fewer tokens, or cancel).
 * The ramp rule (cur + 1 <= max(initial, factor x prev)) counts "cur" over 1 s + J and "prev" over
 * the 1 s - 2J before it (pace-limits.ts), so it also holds where upstream counts, at arrivals
 * shifted by up to J of jitter.
 *
 * Entry time: a take records its entry at the moment it became admissible, when that was at most
 * `limits.backdateMs` ago, instead of at `now`. A caller woken by the wait a blocked take announced
 * arrives late by its timer's lateness (and on Redis a round trip); recording it then would shift
 * every later window by that lateness, send after send (about 0.3 % of a lane's rate at 3 ms per
 * second). The moment is the latest of: the newest entry, the spacing's due time, and for each window
 * the time its newest departed entry left it. From it to `now` no entry arrives or leaves any window,
 * so every window holds at the recorded time exactly what it holds at `now`: the check made at `now`
 * is the check at that time, and the bound below is unchanged. What upstream sees moves by the
 * backdating too: `lateMs` is returned so the send-delay sample (send-delays.ts) includes it, and the
 * jitter allowance covers how much it varies.
 *
 * Window membership: an entry at time e is inside the window of length W at time t while t - e < W
 * (the simulator's convention). Window lengths may change between calls (the measured jitter
 * allowance): a cursor then moves back as well as forward, so each check uses exactly its own length.
 */
import { emissionMs, type PaceLimits } from './pace-limits.js'

export type TakeResult =
  /** `lateMs`: how long before `now` the entry was recorded (0..limits.backdateMs). */
  | { ok: true; id: number; usedFraction: number; lateMs: number }
  | { ok: false; waitMs: number; reason: BlockReason; usedFraction: number }

/** Fraction used of each upstream limit of one account x model (0..1, above 1 briefly after a settle). */
export interface DimensionFractions {
  rpm: number
  tpm: number
  rps: number
  tps: number
}

/** A send as SlidingLog.recent lists it: its id, how long ago it was recorded (ms), what it counts. */
export interface RecentSend {
  id: number
  ageMs: number
  requests: number
  tokens: number
}

/** What blocks a take. 'never': the cost exceeds a whole window's limit. */
export type BlockReason = 'spacing' | 'rate' | 'minute' | 'ramp' | 'never'

// Window indexes: the stretched second, the stretched minute, the ramp's last 1 s + J and last 2 s - J.
const RATE = 0
const MINUTE = 1
const RAMP1 = 2
const RAMP2 = 3

export class SlidingLog {
  private times: number[] = []
  private reqs: number[] = []
  private toks: number[] = []
  /** Id of times[0]; ids are absolute and never reused. */
  private base = 0
  private readonly cursor = [0, 0, 0, 0]
  private readonly sumReq = [0, 0, 0, 0]
  private readonly sumTok = [0, 0, 0, 0]
  private tat = -Infinity
  private last = -Infinity
  /** Entries below this id were forgotten (`forget`): a recount of one of them changes nothing. */
  private forgottenBelow = 0

  /** Admits one request of `tokens` at `now`, or says how long until it could be (dry: never charges). */
  take(now: number, tokens: number, limits: PaceLimits, dry = false): TakeResult {
    now = this.advance(now, limits)
    const blocked = this.blocked(now, tokens, limits)
    const usedFraction = this.usedFraction(limits)
    if (blocked) return { ok: false, ...blocked, usedFraction }
    if (dry) return { ok: true, id: -1, usedFraction, lateMs: 0 }
    const id = this.base + this.times.length
    const at = this.entryTime(now, tokens, limits)
    this.times.push(at)
    this.reqs.push(1)
    this.toks.push(tokens)
    for (let w = 0; w < 4; w++) {
      this.sumReq[w]! += 1
      this.sumTok[w]! += tokens
    }
    this.tat = Math.max(this.tat, at) + emissionMs(limits, tokens)
    return { ok: true, id, usedFraction: this.usedFraction(limits), lateMs: now - at }
  }

  /** When an admitted take's entry is recorded (see "Entry time" above): `now`, or up to backdateMs before. */
  private entryTime(now: number, tokens: number, limits: PaceLimits): number {
    let due = Math.max(
      this.times[this.times.length - 1] ?? -Infinity,
      this.tat - spacingTolerance(emissionMs(limits, tokens)),
    )
    for (let w = 0; w < 4; w++) {
      const c = this.cursor[w]!
      if (c > this.base) due = Math.max(due, leftAt(this.times[c - 1 - this.base]!, windowLength(limits, w)))
    }
    return due < now && now - due <= limits.backdateMs ? due : now
  }

  /**
   * Whether entry `i` (an index) has left the log: older than every window can hold again (see
   * `trim`), whether or not the arrays were compacted since. The Lua twin drops such an entry at
   * once.
   */
  private hasLeft(i: number, now: number, limits: PaceLimits): boolean {
    return i < 0 || now - this.times[i]! >= limits.minuteWindowMs + limits.secondMs
  }

  /**
   * Rewrites what entry `id` counts (settle to real usage, or 0/0 to cancel). Entries that have left
   * the log are ignored (`hasLeft`: a stream settled over a minute after its grant gave its unused
   * spacing back here, not on Redis, until the arrays were next compacted), and so are entries that
   * count nothing (cancelled, or moved: the Lua twin's settle can reach an entry moved after it was
   * sent, redis-meter.ts).
   */
  recount(now: number, id: number, requests: number, tokens: number, limits: PaceLimits): void {
    now = this.advance(now, limits)
    const i = id - this.base
    if (id < 0 || i >= this.times.length || id < this.forgottenBelow) return
    if (this.hasLeft(i, now, limits) || (this.reqs[i] === 0 && this.toks[i] === 0)) return
    const was = this.reqs[i]!
    const dk = tokens - this.toks[i]!
    // Give back the spacing the unused tokens took (a cancel gives back all of it). Only smoothing:
    // the windows above hold the bound whatever tat says.
    const before = this.reqs[i]! > 0 ? emissionMs(limits, this.toks[i]!) : 0
    const after = requests > 0 ? emissionMs(limits, tokens) : 0
    if (after < before) this.tat -= before - after
    this.reqs[i] = requests
    this.toks[i] = tokens
    for (let w = 0; w < 4; w++) {
      if (id < this.cursor[w]!) continue // already outside that window: nothing to correct
      this.sumReq[w]! += inWindow(w, requests) - inWindow(w, was)
      this.sumTok[w]! += dk
    }
  }

  /**
   * Re-records entry `id` at `now`: the send left later than its entry says (send-delays.ts, "A send
   * later than the allowance"). The old entry stops counting and a new one, counting the same, is
   * appended (no earlier than the newest entry, like `seed`). Returns the new entry's id, or undefined
   * when there is nothing to move (forgotten, or cancelled). The spacing is left alone: it only
   * smooths, and the windows, which now hold the send where upstream does, keep the bound.
   * Moving an entry later never lowers what a window ending at or after `now` counts, so no later take
   * can use room the move freed; windows that ended before `now` are no take's any more.
   * An entry that has left the log (recorded more than the minute window and a second ago: a body
   * written that long after its grant, a large upload on a slow link) is counted at `now` with `left`,
   * what its ticket says it counts: it arrives now, and moved to nothing the windows would never hold
   * it (`hasLeft`; the Lua twin takes the same counts from its caller).
   */
  move(now: number, id: number, limits: PaceLimits, left?: { requests: number; tokens: number }): number | undefined {
    now = this.advance(now, limits)
    const i = id - this.base
    if (id < 0 || i >= this.times.length || id < this.forgottenBelow) return undefined
    const gone = this.hasLeft(i, now, limits)
    const requests = gone ? (left?.requests ?? 0) : this.reqs[i]!
    const tokens = gone ? (left?.tokens ?? 0) : this.toks[i]!
    if (requests === 0 && tokens === 0) return undefined
    if (!gone) {
      for (let w = 0; w < 4; w++) {
        if (id < this.cursor[w]!) continue // already outside that window
        this.sumReq[w]! -= inWindow(w, requests)
        this.sumTok[w]! -= tokens
      }
      this.reqs[i] = 0
      this.toks[i] = 0
    }
    const moved = this.nextId()
    this.seed(now, 0, requests, tokens, limits)
    return moved
  }

  /** Highest fraction used of any limit (0..1+), for least-loaded selection. */
  usedFraction(limits: PaceLimits): number {
    return Math.max(
      this.sumReq[RATE]! / limits.rps,
      this.sumTok[RATE]! / limits.tps,
      this.sumReq[MINUTE]! / limits.rpm,
      this.sumTok[MINUTE]! / limits.tpm,
    )
  }

  fractionAt(now: number, limits: PaceLimits): number {
    this.advance(now, limits)
    return this.usedFraction(limits)
  }

  /** Each dimension's fraction used (sliding second and minute, stretched by the margin) at `now`. */
  fractionsAt(now: number, limits: PaceLimits): DimensionFractions {
    this.advance(now, limits)
    return {
      rps: this.sumReq[RATE]! / limits.rps,
      tps: this.sumTok[RATE]! / limits.tps,
      rpm: this.sumReq[MINUTE]! / limits.rpm,
      tpm: this.sumTok[MINUTE]! / limits.tpm,
    }
  }

  /**
   * The sends with an id from `fromId` on that the minute window still holds at `now`, oldest first:
   * how long ago each was recorded (ms) and what it counts; and `end`, the id the next send gets (the
   * Redis meter takes them over after an outage, and asks next time from `end`: redis-meter.ts).
   */
  recent(now: number, limits: PaceLimits, fromId: number): { sends: RecentSend[]; end: number } {
    now = this.advance(now, limits)
    const sends: RecentSend[] = []
    const end = this.base + this.times.length
    for (let c = Math.max(this.cursor[MINUTE]!, fromId); c < end; c++) {
      const i = c - this.base
      if (this.reqs[i]! > 0 || this.toks[i]! > 0)
        sends.push({ id: c, ageMs: now - this.times[i]!, requests: this.reqs[i]!, tokens: this.toks[i]! })
    }
    return { sends, end }
  }

  /**
   * Counts sends this log did not admit (`requests` and `tokens` in all, made elsewhere) as one entry
   * recorded `ageMs` before `now`, or at the newest entry if that is later (the log stays in time
   * order: at worst they count a little longer than they should).
   */
  seed(now: number, ageMs: number, requests: number, tokens: number, limits: PaceLimits): void {
    now = this.advance(now, limits)
    this.times.push(Math.max(now - ageMs, this.times[this.times.length - 1] ?? -Infinity))
    this.reqs.push(requests)
    this.toks.push(tokens)
    // Appended after every cursor, so counted in every window; advance drops it from those it has left.
    for (let w = 0; w < 4; w++) {
      this.sumReq[w]! += inWindow(w, requests)
      this.sumTok[w]! += tokens
    }
    this.advance(now, limits)
  }

  /**
   * Stops counting every entry below id `belowId` (what they count is known elsewhere: the Redis
   * meter's view that seeds this log again, redis-meter.ts `seedMemory`); their recounts are ignored.
   */
  forget(now: number, belowId: number, limits: PaceLimits): void {
    this.advance(now, limits)
    for (let id = Math.max(this.base, this.forgottenBelow); id < Math.min(belowId, this.nextId()); id++) {
      const i = id - this.base
      for (let w = 0; w < 4; w++) {
        if (id < this.cursor[w]!) continue // already outside that window
        this.sumReq[w]! -= inWindow(w, this.reqs[i]!)
        this.sumTok[w]! -= this.toks[i]!
      }
      this.reqs[i] = 0
      this.toks[i] = 0
    }
    this.forgottenBelow = Math.max(this.forgottenBelow, belowId)
  }

  /** What send `id` counts now; undefined once it has left the log. */
  countsOf(id: number): { requests: number; tokens: number } | undefined {
    const i = id - this.base
    if (id < 0 || i < 0 || i >= this.times.length) return undefined
    return { requests: this.reqs[i]!, tokens: this.toks[i]! }
  }

  /** The id the next send gets. */
  nextId(): number {
    return this.base + this.times.length
  }

  /** Requests in the ramp's last second and the second before it (for tests and state). */
  rampCounts(now: number, limits: PaceLimits): { cur: number; prev: number } {
    this.advance(now, limits)
    return { cur: this.sumReq[RAMP1]!, prev: this.sumReq[RAMP2]! - this.sumReq[RAMP1]! }
  }

  private advance(now: number, limits: PaceLimits): number {
    now = Math.max(now, this.last) // a clock step back must not un-expire entries
    this.last = now
    const end = this.base + this.times.length
    for (let w = 0; w < 4; w++) {
      const length = windowLength(limits, w)
      let c = this.cursor[w]!
      // A window that grew (a larger measured jitter allowance, pace-limits.ts) takes back the
      // entries it holds again; they are still in the log, since the minute window is the longest.
      while (c > this.base && now - this.times[c - 1 - this.base]! < length) {
        c--
        this.sumReq[w]! += inWindow(w, this.reqs[c - this.base]!)
        this.sumTok[w]! += this.toks[c - this.base]!
      }
      while (c < end && now - this.times[c - this.base]! >= length) {
        this.sumReq[w]! -= inWindow(w, this.reqs[c - this.base]!)
        this.sumTok[w]! -= this.toks[c - this.base]!
        c++
      }
      this.cursor[w] = c
    }
    this.trim(now, limits)
    return now
  }

  /**
   * Drops entries that every window has passed and that no window can take back (older than the
   * longest window plus the largest growth of a window, one second: paceLimits caps the jitter
   * allowance there), compacting in batches: shift() is O(n).
   */
  private trim(now: number, limits: PaceLimits): void {
    const [a, b, c, d] = this.cursor as [number, number, number, number]
    const passed = Math.min(a, b, c, d)
    const drop0 = passed - this.base
    if (drop0 < 256 && drop0 * 2 < this.times.length) return
    const horizon = limits.minuteWindowMs + limits.secondMs
    let keepFrom = this.base
    while (keepFrom < passed && now - this.times[keepFrom - this.base]! >= horizon) keepFrom++
    const drop = keepFrom - this.base
    if (drop === 0) return
    this.times.splice(0, drop)
    this.reqs.splice(0, drop)
    this.toks.splice(0, drop)
    this.base = keepFrom
  }

  private blocked(now: number, tokens: number, l: PaceLimits): { waitMs: number; reason: BlockReason } | undefined {
    if (tokens > l.tps || tokens > l.tpm) return { waitMs: Infinity, reason: 'never' }
    // The longest of the waits, and what it is for (checked in this order: a tie keeps the first).
    let waitMs = 0
    let reason: BlockReason = 'spacing'
    const consider = (wait: number, why: BlockReason) => {
      if (wait > waitMs) {
        waitMs = wait
        reason = why
      }
    }
    consider(this.tat - spacingTolerance(emissionMs(l, tokens)) - now, 'spacing')
    consider(this.windowWait(now, RATE, l.rateWindowMs, l.rps, l.tps, tokens), 'rate')
    consider(this.windowWait(now, MINUTE, l.minuteWindowMs, l.rpm, l.tpm, tokens), 'minute')
    consider(this.rampWait(now, l), 'ramp')
    return waitMs > 0 ? { waitMs, reason } : undefined
  }

  /** 0 when the window has room for one more request of `tokens`; else when enough will have left it. */
  private windowWait(now: number, w: number, length: number, maxReq: number, maxTok: number, tokens: number): number {
    let needReq = this.sumReq[w]! + 1 - maxReq
    let needTok = this.sumTok[w]! + tokens - maxTok
    if (needReq <= 0 && needTok <= 0) return 0
    const end = this.base + this.times.length
    for (let c = this.cursor[w]!; c < end; c++) {
      needReq -= this.reqs[c - this.base]!
      needTok -= this.toks[c - this.base]!
      if (needReq <= 0 && needTok <= 0) return leftAt(this.times[c - this.base]!, length) - now
    }
    return Infinity
  }

  /** Ramp rule: cur + 1 <= max(initial, factor x prev); when refused, re-check once the oldest send of the last second leaves it. */
  private rampWait(now: number, l: PaceLimits): number {
    if (l.rampFactor <= 0) return 0
    const cur = this.sumReq[RAMP1]!
    const prev = this.sumReq[RAMP2]! - cur
    if (cur + 1 <= Math.max(l.rampInitial, l.rampFactor * prev)) return 0
    const end = this.base + this.times.length
    for (let c = this.cursor[RAMP1]!; c < end; c++) {
      if (this.reqs[c - this.base]! > 0) return leftAt(this.times[c - this.base]!, l.rampWindowMs) - now
    }
    return 0
  }
}

/**
 * The first time at which an entry at `e` is outside a window of `length` by the membership rule
 * (t - e >= length), as the floating-point subtraction computes it: e + length can round below, and
 * a wait of e + length - now could then read 0 while the entry still counts (a double near an
 * epoch-ms time keeps few fractional digits). Entry times, and the waits a blocked take announces, use it.
 */
function leftAt(e: number, length: number): number {
  let t = e + length
  while (t - e < length) t += Math.abs(t) * Number.EPSILON || Number.MIN_VALUE
  return t
}

/** Length of window `w` (RATE, MINUTE, RAMP1, RAMP2). */
function windowLength(limits: PaceLimits, w: number): number {
  if (w === RATE) return limits.rateWindowMs
  if (w === MINUTE) return limits.minuteWindowMs
  return w === RAMP1 ? limits.rampWindowMs : limits.rampPairWindowMs
}

/**
 * What an entry of `requests` counts in window `w`: a seed holds many sends whose times within the
 * minute are unknown, so the ramp's windows count it as one send (counted whole, the second before
 * would look busy and the lane could climb at once past what Qwen saw). meter-lua.ts's `ramped`.
 */
function inWindow(w: number, requests: number): number {
  return w >= RAMP1 && requests > 1 ? 1 : requests
}

/**
 * How early a request may go before its spaced slot: half an interval, but at least 1 ms. The clock
 * ticks in milliseconds and a timer cannot wake sooner, so a finer spacing (a lane above ~1,000
 * requests per second) would otherwise turn every second call inside one millisecond into a 1-2 ms
 * timer wait. The windows, not the spacing, are what bound the count.
 */
export function spacingTolerance(spacingMs: number): number {
  return Math.max(spacingMs / 2, 1)
}
