import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startSimulator, type Simulator } from '../src/index.js'
import { client, outcome, USER_PROMPT_TOKENS } from './helpers.js'

let sim: Simulator

beforeAll(async () => {
  sim = await startSimulator({ burst: false, limits: { 'qwen-plus': { rpm: 100, rps: 100 } } })
})
afterAll(() => sim.close())

describe('stats()', () => {
  it('reports accepted, refused by code, tokens, and the busiest 1 s and 60 s windows in simulated time', async () => {
    const ai = client(sim)
    const call = { max_tokens: 10 - USER_PROMPT_TOKENS } // 10 tokens each
    for (let i = 0; i < 3; i++) await outcome(ai, call) // burst of 3 at ~0 s
    sim.advance(2_000)
    for (let i = 0; i < 2; i++) await outcome(ai, call) // 2 at ~2 s
    sim.advance(59_000)
    for (let i = 0; i < 4; i++) await outcome(ai, call) // 4 at ~61 s: the first 3 left the minute, 2 s ones did not
    await outcome(client(sim, 'sk-bad'))
    await outcome(ai, { model: 'qwen-nope' })
    const s = sim.stats()
    const plus = s.accounts.default!['qwen-plus']!
    expect(plus).toMatchObject({
      account: 'default',
      model: 'qwen-plus',
      accepted: 9,
      refused: {},
      promptTokens: 9 * USER_PROMPT_TOKENS,
      completionTokens: 9 * (10 - USER_PROMPT_TOKENS),
      totalTokens: 90,
      maxRequestsPer1s: 4,
      maxRequestsPer60s: 6, // (1 s, 61 s] holds 2 + 4
      maxTokensPer1s: 40,
      maxTokensPer60s: 60,
      limits: { rpm: 100, rps: 100, tpm: 1_000_000 },
    })
    expect(s.calls).toBe(11)
    expect(s.accepted).toBe(9)
    expect(s.refused).toEqual({ invalid_api_key: 1, model_not_found: 1 })
    expect(s.inFlight).toBe(0)
    expect(s.simulatedMs).toBeGreaterThan(61_000)
  })

  it('reports the busiest fixed minute and fixed second of simulated time, and each minute', async () => {
    sim.reset()
    const ai = client(sim)
    const call = { max_tokens: 10 - USER_PROMPT_TOKENS } // 10 tokens each
    // Calls land 100 ms (plus the loopback time) after a whole simulated second: never on a boundary.
    const at = (ms: number) => sim.advance(ms + 100 - sim.now())
    at(5_000)
    for (let i = 0; i < 3; i++) await outcome(ai, call) // minute 0, second 5: 3
    at(6_000)
    for (let i = 0; i < 2; i++) await outcome(ai, call) // minute 0, second 6: 2
    at(58_000)
    for (let i = 0; i < 2; i++) await outcome(ai, call) // minute 0, second 58: 2 -> minute 0 holds 7
    at(60_000)
    for (let i = 0; i < 4; i++) await outcome(ai, call) // minute 1, second 0: 4
    at(185_000)
    await outcome(ai, call) // minute 3: 1
    const plus = sim.stats().accounts.default!['qwen-plus']!
    expect(plus).toMatchObject({
      maxRequestsPer60s: 11, // the sliding 60 s ending at 60.1 s holds all 11: more than any fixed minute
      maxRequestsPerMinute: 7,
      maxTokensPerMinute: 70,
      maxRequestsPerSecond: 4,
      maxTokensPerSecond: 40,
    })
    expect(plus.minutes).toEqual([
      { start: 0, requests: 7, tokens: 70, maxRequestsPerSecond: 3, maxTokensPerSecond: 30 },
      { start: 60_000, requests: 4, tokens: 40, maxRequestsPerSecond: 4, maxTokensPerSecond: 40 },
      { start: 180_000, requests: 1, tokens: 10, maxRequestsPerSecond: 1, maxTokensPerSecond: 10 },
    ])
  })

  it('reset() clears windows, counters and the clock', async () => {
    sim.reset()
    const s = sim.stats()
    expect([s.calls, s.accepted, s.accounts]).toEqual([0, 0, {}])
    expect(s.simulatedMs).toBeLessThan(1_000)
    expect(await outcome(client(sim))).toBe('ok')
  })
})
