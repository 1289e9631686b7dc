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

  it('reset() clears windows, counters and the clock', async () => {
    sim.reset()
    const s = sim.stats()
    expect([s.calls, s.accepted, s.accounts]).toEqual([0, 0, {}])
    expect(s.simulatedMs).toBeLessThan(1_000)
    expect(await outcome(client(sim))).toBe('ok')
  })
})
