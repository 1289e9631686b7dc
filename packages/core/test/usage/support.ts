// Helpers for the test/usage/*.test.ts suites (not a test file itself).
import type { ModelStats, Simulator } from '@qwen-guard/simulator'
import type { Guard, UsageLane } from '../../src/index.js'

/**
 * A minute-aligned epoch for the recorder's clock, `usage: { now: () => T0 + sim.now() }`: report
 * minute k (epoch ms T0 + k * 60,000) is then exactly the simulator's fixed minute k (simulated ms
 * [k * 60,000, (k + 1) * 60,000) since its start), whatever its timeScale, and the same holds for seconds.
 */
export const T0 = Date.UTC(2026, 0, 1)

export const messages = [{ role: 'user' as const, content: 'Tell me about usage reports.' }]

/**
 * Moves the simulator's clock (and with it the recorder's) to 100 ms after simulated ms `ms`:
 * calls made right after land inside that second, not on a boundary.
 * @throws when the clock is already past that point (the schedule went too slowly)
 */
export function moveTo(sim: Simulator, ms: number): void {
  const target = ms + 100
  const step = target - sim.now()
  if (step < 0) throw new Error(`the simulated clock is already at ${sim.now()} ms, past ${target} ms`)
  sim.advance(step)
}

/** `n` calls at once through `guard`, each for its own user, `max_tokens` each. */
export async function burst(guard: Guard, n: number, maxTokens: number, model = 'qwen-plus'): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      guard.client({ user: `u${i}` }).chat.completions.create({ model, messages, max_tokens: maxTokens }),
    ),
  )
}

/** A report lane's minutes in the simulator's terms (simulated ms since start, tokens summed). */
export function asSimMinutes(lane: UsageLane): ModelStats['minutes'] {
  return lane.minutes.map((minute) => ({
    start: minute.at - T0,
    requests: minute.requests,
    tokens: minute.inputTokens + minute.outputTokens,
    maxRequestsPerSecond: minute.peakRequestsPerSecond,
    maxTokensPerSecond: minute.peakTokensPerSecond,
  }))
}

/** The figures the report and the simulator must agree on, from the report's side. */
export function reportFigures(lane: UsageLane) {
  return {
    requests: lane.requests,
    inputTokens: lane.inputTokens,
    outputTokens: lane.outputTokens,
    maxRequestsPerMinute: lane.peaks.requestsPerMinute.value,
    maxTokensPerMinute: lane.peaks.tokensPerMinute.value,
    maxRequestsPerSecond: lane.peaks.requestsPerSecond.value,
    maxTokensPerSecond: lane.peaks.tokensPerSecond.value,
    minutes: asSimMinutes(lane),
  }
}

/** The same figures from the simulator's `stats()`. */
export function simFigures(stats: ModelStats) {
  return {
    requests: stats.accepted,
    inputTokens: stats.promptTokens,
    outputTokens: stats.completionTokens,
    maxRequestsPerMinute: stats.maxRequestsPerMinute,
    maxTokensPerMinute: stats.maxTokensPerMinute,
    maxRequestsPerSecond: stats.maxRequestsPerSecond,
    maxTokensPerSecond: stats.maxTokensPerSecond,
    minutes: stats.minutes,
  }
}

/** Every account x model of the simulator's stats, as `account/model` -> figures. */
export function simLanes(sim: Simulator): Record<string, ReturnType<typeof simFigures>> {
  const out: Record<string, ReturnType<typeof simFigures>> = {}
  for (const [account, models] of Object.entries(sim.stats().accounts))
    for (const [model, stats] of Object.entries(models)) out[`${account}/${model}`] = simFigures(stats)
  return out
}

/** Every lane of a report, as `account/model` -> figures. */
export function reportLanes(lanes: UsageLane[]): Record<string, ReturnType<typeof reportFigures>> {
  return Object.fromEntries(lanes.map((lane) => [`${lane.account}/${lane.model}`, reportFigures(lane)]))
}
