/**
 * Done-when of issue 13 item 4: the usage report's peaks equal the simulator's `stats()` peaks for
 * the same run. The recorder's clock is the simulator's (`T0 + sim.now()`, support.ts), so report
 * minute k is the simulator's fixed minute k and report second s its fixed second s. Bursts are
 * placed 100 ms into chosen simulated seconds with `advance()`, so nothing lands on a boundary
 * while the send (guard) and the arrival (simulator) are a loopback hop apart.
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { afterEach, describe, expect, it } from 'vitest'
import { createGuard, type Guard } from '../../src/index.js'
import { burst, moveTo, reportLanes, simLanes, T0 } from './support.js'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()))
})

const accounts = [
  { id: 'a', keys: ['sk-a'] },
  { id: 'b', keys: ['sk-b'] },
]

function guardFor(sim: Simulator): Guard {
  const guard = createGuard({
    upstream: {
      baseURL: sim.url,
      accounts: [
        { id: 'a', apiKey: 'sk-a' },
        { id: 'b', apiKey: 'sk-b' },
      ],
      rampUp: false,
    },
    // The guard's limits are wide so that it sends each burst at once; the simulator's are its defaults.
    models: { 'qwen-plus': { rpm: 60_000, tpm: 100_000_000 } },
    usage: { now: () => T0 + sim.now() },
  })
  open.push(guard)
  return guard
}

describe('usage report against the simulator', () => {
  it('per account x model: peak requests and tokens per minute and per second, every minute, tokens: all equal stats()', async () => {
    const sim = await startSimulator({ timeScale: 1, burst: false, accounts })
    open.push(sim)
    const guard = guardFor(sim)
    // [minute, second, calls, max_tokens]: several seconds per minute, an empty minute, a last second.
    const schedule: Array<[number, number, number, number]> = [
      [0, 5, 3, 10],
      [0, 6, 7, 20],
      [0, 40, 2, 5],
      [1, 0, 9, 8],
      [1, 59, 4, 30],
      [3, 12, 5, 12],
      [3, 13, 1, 40],
    ]
    for (const [minute, second, calls, maxTokens] of schedule) {
      moveTo(sim, minute * 60_000 + second * 1_000)
      const start = sim.now()
      await burst(guard, calls, maxTokens)
      expect(sim.now() - start, 'a burst stays inside its simulated second').toBeLessThan(850)
    }

    const report = await guard.usageReport({ from: T0, to: T0 + 5 * 60_000 })
    const simulated = simLanes(sim)
    expect(Object.keys(simulated).sort()).toEqual(['a/qwen-plus', 'b/qwen-plus']) // both accounts served
    expect(reportLanes(report.lanes)).toEqual(simulated)
    // The same run, summed: 31 calls, the busiest second (minute 1, second 0) split over two accounts.
    expect(report.lanes.reduce((n, lane) => n + lane.requests, 0)).toBe(31)
    expect(report.from).toBe(T0)
    expect(report.periodMinutes).toBe(4) // minutes 0 to 3 have begun: the clock is in minute 3
    expect(report.unrecorded).toBe(0)
  })

  it('at timeScale 60 a report minute is a simulated minute (one real second): per-minute peaks equal stats()', async () => {
    const sim = await startSimulator({ timeScale: 60, burst: false, accounts })
    open.push(sim)
    const guard = guardFor(sim)
    // One burst 5 simulated seconds (83 real ms) into each of three minutes: a loopback hop is a few
    // simulated seconds here, far from either end of the minute.
    const schedule: Array<[number, number, number]> = [
      [0, 4, 10],
      [1, 8, 3],
      [2, 2, 25],
    ]
    for (const [minute, calls, maxTokens] of schedule) {
      moveTo(sim, minute * 60_000 + 5_000)
      await burst(guard, calls, maxTokens)
      expect(sim.now()).toBeLessThan(minute * 60_000 + 55_000)
    }
    const report = await guard.usageReport({ from: T0, to: T0 + 3 * 60_000 })
    const perMinute = (lanes: Record<string, { maxRequestsPerMinute: number; maxTokensPerMinute: number }>) =>
      Object.fromEntries(
        Object.entries(lanes).map(([lane, f]) => [lane, [f.maxRequestsPerMinute, f.maxTokensPerMinute]]),
      )
    expect(perMinute(reportLanes(report.lanes))).toEqual(perMinute(simLanes(sim)))
    const minutes = (lanes: Record<string, { minutes: Array<{ start: number; requests: number; tokens: number }> }>) =>
      Object.fromEntries(
        Object.entries(lanes).map(([lane, f]) => [lane, f.minutes.map((m) => [m.start, m.requests, m.tokens])]),
      )
    expect(minutes(reportLanes(report.lanes))).toEqual(minutes(simLanes(sim)))
  })
})
