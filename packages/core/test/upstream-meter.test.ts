import { describe, expect, it } from 'vitest'
import { paceLimits, type PaceLimits } from '../src/upstream/pace-limits.js'
import { SlidingLog } from '../src/upstream/sliding-log.js'
import type { ResolvedModel } from '../src/types.js'

const model = (over: Partial<ResolvedModel> = {}): ResolvedModel => ({
  name: 'm',
  rpm: 600,
  tpm: 60_000,
  rps: 10,
  tps: 1_000,
  contextWindow: 131_072,
  maxOutputTokens: 8_192,
  fallback: [],
  ...over,
})

/** A seeded generator so a failing pattern can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** Largest sum of `pick` over any window (t - w, t] ending at an admission (the busiest windows end at one). */
function maxWindow(sent: Array<{ t: number; tokens: number }>, w: number, pick: (e: { tokens: number }) => number): number {
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
  const sent: Array<{ t: number; tokens: number }> = []
  let t = 0
  for (let i = 0; i < steps; i++) {
    // Bursts, pauses and steady stretches: gaps from 0 to 3 s, mostly short.
    const r = random()
    t += r < 0.6 ? random() * 20 : r < 0.95 ? random() * 300 : random() * 3_000
    const tokens = 1 + Math.floor(random() ** 3 * limits.tps)
    const result = log.take(t, tokens, limits)
    if (result.ok) sent.push({ t, tokens })
    else expect(result.waitMs).toBeGreaterThan(0)
  }
  return sent
}

describe('SlidingLog: exact under sliding windows', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`never exceeds a limit in any sliding window (random arrivals, seed ${seed})`, () => {
      const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 }, 1)
      const sent = drive(limits, seed, 4_000)
      expect(sent.length).toBeGreaterThan(100)
      const count = () => 1
      const tokens = (e: { tokens: number }) => e.tokens
      // The real upstream windows...
      expect(maxWindow(sent, 1_000, count)).toBeLessThanOrEqual(10)
      expect(maxWindow(sent, 1_000, tokens)).toBeLessThanOrEqual(1_000)
      expect(maxWindow(sent, 60_000, count)).toBeLessThanOrEqual(600)
      expect(maxWindow(sent, 60_000, tokens)).toBeLessThanOrEqual(60_000)
      // ...and the stretched ones that give the jitter slack.
      expect(maxWindow(sent, 1_000 / 0.97, count)).toBeLessThanOrEqual(10)
      expect(maxWindow(sent, 60_000 / 0.97, tokens)).toBeLessThanOrEqual(60_000)
    })
  }

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
    if (a.ok) log.settle(200, a.id, 1, 100, limits)
    expect(log.take(200, 800, limits).ok).toBe(true)
    const b = log.take(400, 100, limits)
    expect(b.ok).toBe(true)
    if (b.ok) log.settle(400, b.id, 0, 0, limits)
    expect(log.fractionAt(400, limits)).toBeCloseTo(0.9, 6) // 100 + 800 of 1000 tokens
  })

  it('ramp-up: a cold lane starts at initialRps and grows by at most factor per second', () => {
    const limits = paceLimits(model({ rps: 100, rpm: 6_000, tps: 1e9, tpm: 1e9 }), { safetyMargin: 0.97, rampUp: { initialRps: 2, factor: 1.5 }, timeScale: 1 }, 1)
    const log = new SlidingLog()
    const sent: number[] = []
    for (let t = 0; t < 6_000; t += 1) if (log.take(t, 1, limits).ok) sent.push(t)
    for (let end = 0; end <= 6_000; end += 7) {
      const cur = sent.filter((t) => t > end - 1_000 && t <= end).length
      const prev = sent.filter((t) => t > end - 2_000 && t <= end - 1_000).length
      expect(cur).toBeLessThanOrEqual(Math.max(2, Math.floor(1.5 * prev) + 1))
    }
    expect(sent.filter((t) => t < 1_000).length).toBe(2)
    // ...and it does climb: about 2, 3, 4, 6, 9, 13 in its first six seconds.
    expect(sent.filter((t) => t >= 5_000 && t < 6_000).length).toBeGreaterThanOrEqual(12)
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
