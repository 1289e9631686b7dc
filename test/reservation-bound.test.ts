/**
 * Issue 10 kind 1, end to end: the reservation bounds what a call can be billed. A user with
 * tpm 500 sends ten concurrent calls whose caps the old rule under-reserved (both max fields,
 * no cap at all against a model that answers long by default, thinking); the simulator (which
 * bills max_tokens, or its own default, plus thinking_budget) must never produce more than the
 * user's 500 tokens, and what can never fit is refused at once without reaching it.
 */
import type { Simulator } from '../packages/simulator/src/index.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  guardOptions,
  ResponseTap,
  SECRETS,
  startApp,
  startSecretSimulator,
  type Framework,
  type GuardedApp,
} from './http-support.js'

const tap = new ResponseTap()
afterAll(() => tap.assertNoSecrets())

const messages = [{ role: 'user', content: 'Hi' }]

describe.each<Framework>(['express', 'koa', 'node'])('%s: ten concurrent calls of a tpm-500 user', (framework) => {
  let sim: Simulator
  let app: GuardedApp
  beforeAll(async () => {
    // Without max_tokens this simulator answers 400 tokens (as Qwen answers up to the model's cap).
    sim = await startSecretSimulator({ burst: false, defaultMaxTokens: 400 })
    app = await startApp(framework, guardOptions(sim, { user: { tpm: 500 } }, { defaultMaxTokens: 100 }), tap)
  })
  afterAll(async () => {
    await app?.close()
    await sim?.close()
  })

  const billed = () => sim.stats().accounts[SECRETS.account]?.['qwen-plus']?.totalTokens ?? 0

  async function tenCalls(user: string, fields: Record<string, unknown>): Promise<number[]> {
    const send = () =>
      fetch(`${app.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-user': user },
        body: JSON.stringify({ model: 'qwen-plus', messages, ...fields }),
      }).then(async (response) => {
        await response.arrayBuffer()
        return response.status
      })
    return Promise.all(Array.from({ length: 10 }, send))
  }

  it('both max_tokens 2000 and max_completion_tokens 1: the larger is reserved, so every call is 413 and none reaches Qwen', async () => {
    const before = sim.stats().calls
    const statuses = await tenCalls('both-caps', { max_tokens: 2_000, max_completion_tokens: 1 })
    expect(statuses).toEqual(Array(10).fill(413))
    expect(sim.stats().calls).toBe(before)
  })

  it.each<[string, Record<string, unknown>]>([
    ['max_tokens 100', { max_tokens: 100 }],
    ['no cap at all (the default cap is sent upstream)', {}],
    [
      'thinking with a budget of 100 and max_tokens 20',
      { enable_thinking: true, thinking_budget: 100, max_tokens: 20 },
    ],
    ['thinking without a budget (the default budget is capped and sent)', { enable_thinking: true, max_tokens: 20 }],
  ])('%s: Qwen bills at most the 500 tokens of the minute', async (name, fields) => {
    const before = billed()
    const statuses = await tenCalls(`bound-${name}`, fields)
    for (const status of statuses) expect([200, 413, 429]).toContain(status)
    expect(billed() - before).toBeLessThanOrEqual(500)
  })
})
