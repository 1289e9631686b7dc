import { describe, expect, it } from 'vitest'
import { paceLimits, rampJitterMs, type PaceLimits } from '../../src/upstream/pace-limits.js'
import { SlidingLog } from '../../src/upstream/sliding-log.js'
import { model } from './support.js'

/** A seeded generator so a failing pattern can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** Largest sum of `pick` over any window (t - w, t] ending at an admission (the busiest windows end at one). */
function maxWindow(
  sent: Array<{ t: number; tokens: number }>,
  w: number,
  pick: (e: { tokens: number }) => number,
): number {
  let best = 0
  let start = 0
  let sum = 0
  for (let i = 0; i < sent.length; i++) {
    sum += pick(sent[i]!)
    while (sent[i]!.t - sent[start]!.t >= w) sum -= pick(sent[start++]!)
    best = Math.max(best, sum)
  }
  return best
}

function drive(limits: PaceLimits, seed: number, steps: number) {
  const log = new SlidingLog()
  const random = rng(seed)
  // t: when the take was made (the send leaves then); recorded: the entry's time (backdated).
  const sent: Array<{ t: number; tokens: number; recorded: number }> = []
  let t = 0
  for (let i = 0; i < steps; i++) {
    // Bursts, pauses and steady stretches: gaps from 0 to 3 s, mostly short.
    const r = random()
    t += r < 0.6 ? random() * 20 : r < 0.95 ? random() * 300 : random() * 3_000
    const tokens = 1 + Math.floor(random() ** 3 * limits.tps)
    const result = log.take(t, tokens, limits)
    if (result.ok) {
      expect(result.lateMs).toBeGreaterThanOrEqual(0)
      expect(result.lateMs).toBeLessThanOrEqual(limits.backdateMs)
      sent.push({ t, tokens, recorded: t - result.lateMs })
    } else expect(result.waitMs).toBeGreaterThan(0)
  }
  return sent
}

describe('SlidingLog: exact under sliding windows', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`never exceeds a limit in any sliding window (random arrivals, seed ${seed})`, () => {
      const limits = paceLimits(
        model(),
        { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 },
        1,
      )
      const sent = drive(limits, seed, 4_000)
      expect(sent.length).toBeGreaterThan(100)
      const count = () => 1
      const tokens = (e: { tokens: number }) => e.tokens
      // The real upstream windows...
      expect(maxWindow(sent, 1_000, count)).toBeLessThanOrEqual(10)
      expect(maxWindow(sent, 1_000, tokens)).toBeLessThanOrEqual(1_000)
      expect(maxWindow(sent, 60_000, count)).toBeLessThanOrEqual(600)
      expect(maxWindow(sent, 60_000, tokens)).toBeLessThanOrEqual(60_000)
      // ...and the stretched ones that give the jitter slack: exact at the recorded times, and at the
      // take times short of the backdating (a backdated send leaves up to backdateMs after its entry).
      const recorded = sent.map((e) => ({ ...e, t: e.recorded }))
      expect(limits.backdateMs).toBeGreaterThan(0)
      expect(maxWindow(recorded, 1_000 / 0.97, count)).toBeLessThanOrEqual(10)
      expect(maxWindow(recorded, 1_000 / 0.97, tokens)).toBeLessThanOrEqual(1_000)
      expect(maxWindow(recorded, 60_000 / 0.97, tokens)).toBeLessThanOrEqual(60_000)
      expect(maxWindow(sent, 1_000 / 0.97 - limits.backdateMs, count)).toBeLessThanOrEqual(10)
      expect(maxWindow(sent, 60_000 / 0.97 - limits.backdateMs, tokens)).toBeLessThanOrEqual(60_000)
      expect(sent.some((e) => e.recorded < e.t)).toBe(true) // the random pattern does backdate
    })
  }

  it('a caller its timer wakes late loses nothing: entries are recorded when they became admissible', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    for (const lateness of [0, 1, 3, limits.backdateMs]) {
      const log = new SlidingLog()
      let admitted = 0
      let t = 0
      // Retries the announced wait, arriving `lateness` ms after it (a timer, a round trip).
      while (t < 60_000) {
        const r = log.take(t, 1, limits)
        if (r.ok) {
          admitted++
          if (admitted > 10) expect(r.lateMs).toBeCloseTo(lateness, 6) // once the windows are full
        }
        t += r.ok ? 0 : r.waitMs + lateness
      }
      // 10 per stretched second whatever the lateness, as if each retry had come on time: before
      // entries were backdated, 3 ms late cost 10 x 60 x (1 - 1031 / 1034) = 1.7 requests a minute.
      expect(admitted, `lateness ${lateness}`).toBeGreaterThanOrEqual(Math.floor((60_000 / (1_000 / 0.97)) * 10))
    }
  })

  it('on an epoch-ms integer clock a saturated lane is never over its window, backdated entries included', () => {
    // Backdated entries sit at fractional times (e0 + k x 1030.93 ms); near 1.7e12 a double keeps
    // about 0.2 µs of fraction, so e + W - now could read 0 while e still counts (found by fuzzing).
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    for (const seed of [1, 2, 3]) {
      const random = rng(seed)
      const log = new SlidingLog()
      const recorded = (log as unknown as { times: number[] }).times // the entries as stored
      const kept: number[] = []
      let start = 0
      let over = 0
      let backdated = 0
      let now = 1_700_000_000_000
      for (let i = 0; i < 100_000; i++) {
        const r = log.take(now, 1, limits)
        if (r.ok) {
          const at = recorded[recorded.length - 1]!
          if (at < now) backdated++
          kept.push(at)
          while (now - kept[start]! >= limits.rateWindowMs) start++ // the membership rule, at now
          if (kept.length - start > limits.rps) over++
          now += Math.floor(random() * 2) // another caller right behind, or not
        } else now += Math.ceil(r.waitMs) + (random() < 0.7 ? 0 : Math.floor(random() * 4)) // a timer, a bit late
      }
      expect(backdated, `seed ${seed}`).toBeGreaterThan(1_000)
      expect(over, `seed ${seed}`).toBe(0)
    }
  })

  it('an entry is backdated only while the wait that held it ended at most backdateMs ago', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    const first = log.take(0, 1, limits) // an idle lane: nothing held it
    expect(first.ok && first.lateMs).toBe(0)
    const spaced = log.take(limits.spacingMs / 2 + 2, 1, limits) // the spacing freed it 2 ms ago
    expect(spaced.ok && spaced.lateMs).toBeCloseTo(2, 6)
    const slow = log.take(5_000, 1, limits) // long after anything held it
    expect(slow.ok && slow.lateMs).toBe(0)
    const late = new SlidingLog()
    late.take(0, 1, limits)
    const beyond = late.take(limits.spacingMs / 2 + limits.backdateMs + 0.5, 1, limits) // more than backdateMs late
    expect(beyond.ok && beyond.lateMs).toBe(0)
  })

  it('sustains safetyMargin x rps when offered more, evenly spaced', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    let admitted = 0
    let t = 0
    // A caller that retries exactly at the announced wait.
    while (t < 60_000) {
      const r = log.take(t, 1, limits)
      if (r.ok) admitted++
      t += r.ok ? 0 : r.waitMs
    }
    expect(admitted / 60).toBeGreaterThan(9.6)
    expect(admitted / 60).toBeLessThanOrEqual(10)
  })

  it('a wait it announces is exact: the take passes then, not 1 ms before', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    expect(log.take(0, 900, limits).ok).toBe(true)
    const r = log.take(200, 200, limits)
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.reason).toBe('rate')
    expect(r.waitMs).toBeCloseTo(1_000 / 0.97 - 200, 6)
    expect(log.take(200 + r.waitMs - 1, 200, limits, true).ok).toBe(false)
    expect(log.take(200 + r.waitMs, 200, limits).ok).toBe(true)
  })

  it('one large request may use the whole per-second budget; a larger one never fits', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    expect(log.take(0, 1_000, limits).ok).toBe(true)
    const never = log.take(5_000, 1_001, limits)
    expect(never.ok === false && never.reason === 'never' && never.waitMs === Infinity).toBe(true)
  })

  it('settle moves the meter back; cancel gives everything back', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    const a = log.take(0, 800, limits)
    expect(a.ok).toBe(true)
    expect(log.take(200, 800, limits, true).ok).toBe(false)
    if (a.ok) log.recount(200, a.id, 1, 100, limits)
    expect(log.take(200, 800, limits).ok).toBe(true)
    const b = log.take(1_000, 100, limits) // after the second 800's share of the token rate (below)
    expect(b.ok).toBe(true)
    if (b.ok) log.recount(1_000, b.id, 0, 0, limits)
    expect(log.fractionAt(1_000, limits)).toBeCloseTo(0.9, 6) // 100 + 800 of 1000 tokens
  })

  it('a token-bound lane spreads its sends over the window: each takes its share of the token rate', () => {
    // 250-token calls against 1,000 TPS (rps 100 would allow a send every 10 ms): one every 1 s / (4 x 0.97).
    const limits = paceLimits(model({ rps: 100, rpm: 6_000 }), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    const sent: number[] = []
    for (let t = 0; t < 10_000; t += 1) if (log.take(t, 250, limits).ok) sent.push(t)
    const gaps = sent.slice(1).map((t, i) => t - sent[i]!)
    const share = 250 * limits.tokenSpacingMs
    expect(share).toBeCloseTo(1_000 / 0.97 / 4, 6)
    // Never closer than half a share (the GCRA's tolerance), one share apart once going, and the
    // full token rate all the same (the windows would have let 4 go at once, then nothing for 1 s).
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(share / 2 - 1)
    expect((sent.at(-1)! - sent[1]!) / (sent.length - 2)).toBeGreaterThan(share - 1)
    expect(sent.length).toBeGreaterThanOrEqual(Math.floor(10_000 / share))
  })

  it('settling a reservation down gives back its share of the token rate; a cancel gives back all of it', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
    const log = new SlidingLog()
    const big = log.take(0, 800, limits) // 800 tokens reserved: the next send would wait ~0.8 s
    expect(big.ok).toBe(true)
    const blocked = log.take(100, 50, limits, true)
    expect(blocked.ok === false && blocked.reason === 'spacing').toBe(true)
    if (big.ok) log.recount(100, big.id, 1, 60, limits) // used 60: its share is one request interval
    expect(log.take(100, 50, limits).ok).toBe(true)
    const next = log.take(150, 50, limits, true)
    expect(next.ok === false && next.reason === 'spacing').toBe(true)
    const c = log.take(300, 500, limits)
    expect(c.ok).toBe(true)
    if (c.ok) log.recount(300, c.id, 0, 0, limits) // cancelled: never sent
    expect(log.take(400, 50, limits).ok).toBe(true)
  })

  it('ramp-up: a cold lane starts at initialRps and grows by at most factor per second', () => {
    const limits = paceLimits(
      model({ rps: 100, rpm: 6_000, tps: 1e9, tpm: 1e9 }),
      { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 },
      1,
    )
    const log = new SlidingLog()
    const sent: number[] = []
    for (let t = 0; t < 6_000; t += 1) if (log.take(t, 1, limits).ok) sent.push(t)
    // Where upstream applies the rule, at each arrival, in its own sliding seconds.
    const arrivals = sent
    for (const [i, a] of arrivals.entries()) {
      const cur = arrivals.filter((t, j) => j < i && t > a - 1_000).length
      const prev = arrivals.filter((t) => t > a - 2_000 && t <= a - 1_000).length
      expect(cur + 1).toBeLessThanOrEqual(Math.max(2, 1.5 * prev))
    }
    expect(sent.filter((t) => t < 1_000).length).toBe(2)
    // ...and it does climb: about 2, 3, 4, 6, 9, 13 in its first six seconds.
    expect(sent.filter((t) => t >= 5_000 && t < 6_000).length).toBeGreaterThanOrEqual(12)
  })

  // The ramp rule is checked where upstream sees the sends: at their arrivals, which transport
  // jitter shifts by up to (1/m - 1) x 1 s and may reorder. Before the ramp windows were widened and
  // narrowed by that budget, a send counted in the guard's "second before" could arrive in upstream's
  // "last second" (the simulator's limit_burst_rate at 3 s - 4 s of a bench ramp).
  for (const seed of [11, 12, 13, 14, 15, 16]) {
    it(`ramp-up: holds at upstream's arrivals under jitter within the margin's budget (seed ${seed})`, () => {
      const limits = paceLimits(
        model({ rps: 20, rpm: 1_200, tps: 1e9, tpm: 1e9 }),
        { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 },
        1,
      )
      const jitter = 1_000 / 0.97 - 1_000
      const random = rng(seed)
      const log = new SlidingLog()
      const arrivals: number[] = []
      // Offered more than it can take, with a few pauses; each send arrives 0..jitter ms later, the
      // extremes most often.
      for (let t = 0; t < 14_000; t += random() < 0.998 ? 0.5 : random() * 200) {
        if (!log.take(t, 1, limits).ok) continue
        const r = random()
        arrivals.push(t + (r < 0.4 ? 0 : r < 0.8 ? jitter : random() * jitter))
      }
      arrivals.sort((a, b) => a - b)
      let worst = -Infinity
      for (const [i, a] of arrivals.entries()) {
        let cur = 0
        for (let j = i - 1; j >= 0 && arrivals[j]! > a - 1_000; j--) cur++
        const prev = arrivals.filter((t) => t > a - 2_000 && t <= a - 1_000).length
        worst = Math.max(worst, cur + 1 - Math.max(2, 1.5 * prev))
      }
      expect(worst).toBeLessThanOrEqual(0)
      // ...and it still climbs (the pauses hold it back; the steady test below checks full rate).
      expect(arrivals.filter((a) => a >= 12_000 && a < 14_000).length).toBeGreaterThanOrEqual(20)
    })
  }

  it('ramp-up: the widened windows do not throttle a lane that sends steadily at full rate', () => {
    for (const rps of [1, 2, 3, 4, 5, 7, 10, 33, 100]) {
      for (const margin of [0.8, 0.9, 0.97, 0.99]) {
        const limits = paceLimits(
          model({ rps, rpm: rps * 60, tps: 1e9, tpm: 1e9 }),
          { safetyMargin: margin, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 },
          1,
        )
        const log = new SlidingLog()
        let late = 0
        for (let t = 0; t < 40_000; t += 0.5) if (log.take(t, 1, limits).ok && t >= 20_000) late++
        // Once ramped up, 20 s run at the rate windows' pace, margin x rps, to within a request.
        expect(Math.abs(late - 20 * margin * rps), `rps ${rps}, margin ${margin}`).toBeLessThanOrEqual(1.5)
      }
    }
  })

  it("ramp-up: the ramp jitter budget is the margin's, capped so a steady lane still passes the rule", () => {
    expect(rampJitterMs(1_000, 0.97, 1.5)).toBeCloseTo(1_000 / 0.97 - 1_000, 9)
    expect(rampJitterMs(1_000, 0.8, 1.5)).toBeCloseTo(1_000 / 28, 9)
    expect(rampJitterMs(250, 1, 1.5)).toBe(0)
  })

  it('ramp-up: after an idle stretch it starts slowly again', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 }, 1)
    const log = new SlidingLog()
    for (let t = 0; t < 20_000; t += 5) log.take(t, 1, limits)
    let n = 0
    for (let t = 40_000; t < 41_000; t += 1) if (log.take(t, 1, limits).ok) n++
    expect(n).toBe(2)
  })

  it('the AIMD pace spreads requests further apart', () => {
    const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 0.5)
    expect(limits.spacingMs).toBeCloseTo(1_000 / (0.97 * 10 * 0.5), 6)
  })
})
