/**
 * What the recorder counts besides the peaks, against the simulator: upstream refusals by Qwen's
 * code (equal to the simulator's own refusal counts), minutes at the limit, fallbacks served,
 * queue waits; retention; the option and period checks.
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { afterEach, describe, expect, it } from 'vitest'
import { createGuard, QwenGuardConfigError, type Guard, type GuardOptions } from '../../src/index.js'
import { burst, messages, moveTo, T0 } from './support.js'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()))
})

async function simulator(options: Parameters<typeof startSimulator>[0] = {}): Promise<Simulator> {
  const sim = await startSimulator({ timeScale: 1, burst: false, ...options })
  open.push(sim)
  return sim
}

function guardFor(sim: Simulator, over: Partial<GuardOptions> = {}): Guard {
  const guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
    usage: { now: () => T0 + sim.now() },
    ...over,
  })
  open.push(guard)
  return guard
}

describe('usage recorder', () => {
  it('counts upstream refusals by code as the simulator does, marks their minute at the limit, and counts the fallbacks that served', async () => {
    // Qwen gives qwen3-max one request a second; the guard believes it has 100 and falls back to qwen-plus.
    const sim = await simulator({ limits: { 'qwen3-max': { rpm: 60 } } })
    const guard = guardFor(sim, {
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, maxAttempts: 3 },
      models: { 'qwen3-max': { rpm: 6_000, fallback: ['qwen-plus'] } },
    })
    moveTo(sim, 2_000)
    // Some calls may end 429 after their attempts: what matters is what reached Qwen.
    await Promise.allSettled(
      Array.from({ length: 4 }, (_, i) =>
        guard.client({ user: `u${i}` }).chat.completions.create({ model: 'qwen3-max', messages, max_tokens: 10 }),
      ),
    )
    const report = await guard.usageReport({ from: T0, to: T0 + 60_000 })
    const stats = sim.stats().accounts.default!
    const max = report.lanes.find((lane) => lane.model === 'qwen3-max')!
    const plus = report.lanes.find((lane) => lane.model === 'qwen-plus')!
    expect(stats['qwen3-max']!.refused.limit_requests).toBeGreaterThan(0)
    expect(max.refusals).toEqual({
      total: stats['qwen3-max']!.refused.limit_requests,
      byCode: stats['qwen3-max']!.refused,
    })
    expect(max.requests).toBe(stats['qwen3-max']!.accepted)
    expect(max.atLimit.minutes).toBe(1) // refused for rate in minute 0
    expect(max.minutes[0]!.atLimit).toBe(true)
    expect(plus.fallbacks).toBe(stats['qwen-plus']!.accepted) // every qwen-plus answer was a fallback
    expect(plus.fallbacks).toBeGreaterThan(0)
    expect(max.fallbacks).toBe(0)
  })

  it('reports queue waits: every answered request measured, the ones that waited, percentiles within the maximum', async () => {
    const sim = await simulator()
    const guard = guardFor(sim, { models: { 'qwen-plus': { rpm: 120 } } }) // 2 a second (x 0.97): a burst of 5 queues
    await burst(guard, 5, 5)
    const [lane] = (await guard.usageReport({ from: T0, to: T0 + 3_600_000 })).lanes
    const waits = lane!.queueWaits
    expect(waits.count).toBe(5)
    expect(waits.waited).toBeGreaterThanOrEqual(3)
    expect(waits.maxMs).toBeGreaterThan(400)
    expect(waits.p50Ms).toBeLessThanOrEqual(waits.p99Ms)
    expect(waits.p99Ms).toBeLessThanOrEqual(waits.maxMs)
    expect(waits.meanMs).toBeGreaterThan(0)
    expect(lane!.limits).toEqual({ rpm: 120, tpm: 1_000_000, rps: 2, tps: 1_000_000 / 60 })
  })

  it('keeps a minute for retentionMs, then forgets it (memory store)', async () => {
    const sim = await simulator()
    const guard = guardFor(sim, { usage: { retentionMs: 120_000, now: () => T0 + sim.now() } })
    moveTo(sim, 1_000)
    await burst(guard, 2, 5)
    moveTo(sim, 4 * 60_000)
    await burst(guard, 1, 5)
    const report = await guard.usageReport({ from: T0, to: T0 + 5 * 60_000 })
    expect(report.lanes[0]!.minutes.map((m) => [m.at - T0, m.requests])).toEqual([[240_000, 1]])
    expect(report.retentionMs).toBe(120_000)
  })

  it('checks the period and the option', async () => {
    const sim = await simulator()
    const guard = guardFor(sim)
    await expect(guard.usageReport({ from: 'yesterday' as never })).rejects.toThrow(
      /from must be a Date or epoch ms, got string/,
    )
    await expect(guard.usageReport({ from: new Date('nope') })).rejects.toThrow(TypeError)
    // Finite, but no Date: its message could not even name it ("Invalid time value").
    await expect(guard.usageReport({ from: 2e16, to: T0 })).rejects.toThrow(
      /from must be a Date or epoch ms, got 20000000000000000/,
    )
    await expect(guard.usageReport({ to: -1e16 })).rejects.toThrow(/to must be a Date or epoch ms/)
    await expect(guard.usageReport({ from: T0 + 1, to: T0 })).rejects.toThrow(RangeError)
    await expect(guard.usageReport({ atLimitRatio: 1.5 })).rejects.toThrow(/atLimitRatio/)
    const report = await guard.usageReport() // the last 24 hours by default
    expect(report.to - report.from).toBe(86_400_000 + 60_000) // widened to whole minutes
    expect(report.lanes).toEqual([])

    const off = guardFor(sim, { usage: false })
    await expect(off.usageReport()).rejects.toThrow(/usage: false/)
    await off.client({ user: 'u' }).chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 3 })

    const make = (usage: unknown) => () =>
      createGuard({ upstream: { apiKey: 'sk' }, usage: usage as GuardOptions['usage'] })
    expect(make({ retentionMs: 1_000 })).toThrow(QwenGuardConfigError)
    expect(make({ retentionMs: 1_000 })).toThrow(/usage.retentionMs/)
    expect(make({ now: 5 })).toThrow(/usage.now/)
    expect(make({ retention: 5 })).toThrow(/usage.retention: unknown option/)
  })

  // An attack on 27d1e62: a usage.now that threw sat inside the send's try, so the call was retried as
  // a network failure and answered 502 with the account blamed; one that returned NaN was accepted
  // and the report failed later with a RangeError.
  it("never fails a call over the app's usage.now; the report names a clock that gives no epoch ms", async () => {
    const sim = await simulator()
    for (const [now, message] of [
      [
        () => {
          throw new Error('clock broke')
        },
        'clock broke',
      ],
      [() => Number.NaN, 'usage.now() must return epoch ms (a finite number), got NaN'],
      [() => Promise.resolve(T0), 'usage.now() must return epoch ms (a finite number), got an object'],
    ] as const) {
      const refusals: unknown[] = []
      const guard = guardFor(sim, { usage: { now: now as () => number } })
      guard.on('upstream_refusal', (event) => void refusals.push(event))
      const answer = await guard.client({ user: 'u' }).chat.completions.create({ model: 'qwen-plus', messages })
      expect(answer.choices).toHaveLength(1)
      expect(refusals).toEqual([])
      await expect(guard.usageReport()).rejects.toThrow(message)
    }
    expect(sim.stats().accepted).toBe(3) // one send each: nothing retried
  })
})
