import OpenAI from 'openai'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startSimulator, type Simulator } from '../src/index.js'
import { client, outcome, post, rejection, USER, USER_PROMPT_TOKENS } from './helpers.js'

let sim: Simulator
let ai: OpenAI

beforeAll(async () => {
  sim = await startSimulator({
    accounts: [
      { id: 'main', keys: ['sk-sim', 'sk-sim-2'] },
      { id: 'other', keys: ['sk-other'] },
      { id: 'free', keys: ['sk-free'], freeTokens: 50 },
      { id: 'owing', keys: ['sk-owing'], state: 'arrears' },
      { id: 'freeonly', keys: ['sk-freeonly'], state: 'free_tier_only' },
    ],
    limits: {
      'qwen-plus': { rpm: 5, rps: 100 },
      'qwen-max': { rps: 100, tpm: 100, tps: 10_000 },
      'qwen-turbo': { rpm: 1000, rps: 3 },
      'qwen-flash': { rpm: 1000, rps: 1000, tpm: 1_000_000, tps: 50 },
    },
    burst: false,
  })
  ai = client(sim)
})
afterEach(() => sim.reset())
afterAll(() => sim.close())

/** Asserts the compatible-mode body and headers of a refusal, through the SDK. */
function expectRefusal(err: InstanceType<typeof OpenAI.APIError>, status: number, code: string, message: string) {
  expect(err).toBeInstanceOf(OpenAI.APIError)
  expect(err.status).toBe(status)
  expect(err.code).toBe(code)
  expect(err.message).toContain(message)
  expect(err.requestID).toMatch(/^[0-9a-f-]{36}$/)
  expect(err.headers?.get('retry-after')).toBeNull()
  expect(err.headers?.get('retry-after-ms')).toBeNull()
  expect([...(err.headers?.keys() ?? [])].filter((h) => h.startsWith('x-ratelimit'))).toEqual([])
}

describe('rate limits (sliding windows, per account x model)', () => {
  it('refuses the call past RPM with limit_requests, then admits one once the window slides', async () => {
    for (let i = 0; i < 5; i++) expect(await outcome(ai)).toBe('ok')
    const err = await rejection(ai.chat.completions.create({ model: 'qwen-plus', messages: USER }))
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    expectRefusal(err, 429, 'limit_requests', 'Requests rate limit exceeded')
    expect(err.type).toBe('limit_requests')
    sim.advance(59_000)
    expect(await outcome(ai)).toBe('limit_requests')
    sim.advance(1_000)
    expect(await outcome(ai)).toBe('ok')
    const s = sim.stats().accounts.main!['qwen-plus']!
    expect([s.accepted, s.refused.limit_requests, s.maxRequestsPer60s]).toEqual([6, 2, 5])
  })

  it('slides in real time under timeScale', async () => {
    const fast = await startSimulator({ limits: { 'qwen-plus': { rpm: 2, rps: 100 } }, burst: false, timeScale: 600 })
    try {
      const c = client(fast)
      expect([await outcome(c), await outcome(c), await outcome(c)]).toEqual(['ok', 'ok', 'limit_requests'])
      await new Promise((r) => setTimeout(r, 110)) // 66 simulated seconds
      expect(await outcome(c)).toBe('ok')
    } finally {
      await fast.close()
    }
  })

  it('shares the quota between keys of one account, not between accounts', async () => {
    const second = client(sim, 'sk-sim-2')
    for (let i = 0; i < 5; i++) expect(await outcome(i % 2 ? ai : second)).toBe('ok')
    expect(await outcome(second)).toBe('limit_requests')
    expect(await outcome(client(sim, 'sk-other'))).toBe('ok')
    expect(await outcome(ai, { model: 'qwen3-max' })).toBe('ok') // another model, another quota
  })

  it('refuses past TPM with insufficient_quota; the charge is prompt + completion at arrival', async () => {
    const call = { model: 'qwen-max', max_tokens: 20 - USER_PROMPT_TOKENS } // 20 tokens each
    for (let i = 0; i < 5; i++) expect(await outcome(ai, call)).toBe('ok')
    const err = await rejection(ai.chat.completions.create({ ...call, messages: USER }))
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    expectRefusal(err, 429, 'insufficient_quota', 'You exceeded your current quota')
    expect(await outcome(ai, { ...call, max_tokens: 1 })).toBe('insufficient_quota')
    sim.advance(60_000)
    expect(await outcome(ai, call)).toBe('ok')
    expect(sim.stats().accounts.main!['qwen-max']!.maxTokensPer60s).toBe(100)
  })

  it('refuses past RPS with limit_requests and admits again a second later', async () => {
    const call = { model: 'qwen-turbo' }
    expect([await outcome(ai, call), await outcome(ai, call), await outcome(ai, call)]).toEqual(['ok', 'ok', 'ok'])
    expect(await outcome(ai, call)).toBe('limit_requests')
    sim.advance(1_000)
    expect(await outcome(ai, call)).toBe('ok')
  })

  it('refuses past TPS with insufficient_quota', async () => {
    const call = { model: 'qwen-flash', max_tokens: 30 - USER_PROMPT_TOKENS }
    expect(await outcome(ai, call)).toBe('ok')
    expect(await outcome(ai, call)).toBe('insufficient_quota')
    expect(await outcome(ai, { ...call, max_tokens: 20 - USER_PROMPT_TOKENS })).toBe('ok') // 30 + 20 = 50 = TPS
    sim.advance(1_000)
    expect(await outcome(ai, call)).toBe('ok')
  })
})

describe('burst protection', () => {
  it('refuses a cold climb past the floor with limit_burst_rate, and allows doubling the next second', async () => {
    const b = await startSimulator({}) // qwen-plus: 600 RPM -> RPS 10, floor 5, factor 2
    try {
      const c = client(b)
      const first = []
      for (let i = 0; i < 6; i++) first.push(await outcome(c))
      expect(first).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'limit_burst_rate'])
      const err = await rejection(c.chat.completions.create({ model: 'qwen-plus', messages: USER }))
      expectRefusal(err, 429, 'limit_burst_rate', 'Request rate increased too quickly')
      b.advance(1_000)
      const second = []
      for (let i = 0; i < 11; i++) second.push(await outcome(c))
      expect(second.slice(0, 10).every((r) => r === 'ok')).toBe(true)
      expect(second[10]).toBe('limit_requests') // RPS 10 is checked before the burst rule
      expect(b.stats().accounts.default!['qwen-plus']!.refused).toEqual({ limit_burst_rate: 2, limit_requests: 1 })
    } finally {
      await b.close()
    }
  })
})

describe('X-DashScope-Wait-Timeout', () => {
  it('queues a burst refusal until the rule lets it pass, but not an RPM refusal', async () => {
    const b = await startSimulator({ timeScale: 10, limits: { 'qwen-turbo': { rpm: 6 } } }) // qwen-plus: floor 5
    try {
      const c = client(b)
      const wait = { headers: { 'X-DashScope-Wait-Timeout': '3' } }
      for (let i = 0; i < 5; i++) expect(await outcome(c)).toBe('ok')
      const t = performance.now()
      await c.chat.completions.create({ model: 'qwen-plus', messages: USER }, wait)
      expect(performance.now() - t).toBeGreaterThanOrEqual(40) // waited for the first second to slide
      expect(b.stats().accounts.default!['qwen-plus']!.refused).toEqual({})
      // qwen-turbo: 6 RPM -> RPS max(1, 0.1) = 1: the second call is a requests refusal, answered at once despite the header.
      expect(await outcome(c, { model: 'qwen-turbo' })).toBe('ok')
      const err = await rejection(c.chat.completions.create({ model: 'qwen-turbo', messages: USER }, wait))
      expect(err.code).toBe('limit_requests')
    } finally {
      await b.close()
    }
  })
})

describe('accounts and terminal states', () => {
  it('answers an unknown or missing key with 401 invalid_api_key', async () => {
    const err = await rejection(client(sim, 'sk-nope').chat.completions.create({ model: 'qwen-plus', messages: USER }))
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError)
    expectRefusal(err, 401, 'invalid_api_key', 'Invalid API-key provided')
    const raw = await post(sim, { model: 'qwen-plus', messages: USER }, { authorization: '' })
    expect(raw.status).toBe(401)
    expect(sim.stats().refused.invalid_api_key).toBe(2)
    expect(sim.stats().accepted).toBe(0)
  })

  it('refuses once the free allowance is used: 429 Throttling.AllocationQuota "Free allocated quota exceeded."', async () => {
    const free = client(sim, 'sk-free')
    const call = { model: 'qwen-plus', max_tokens: 30 - USER_PROMPT_TOKENS }
    expect(await outcome(free, call)).toBe('ok') // 30 used
    expect(await outcome(free, call)).toBe('ok') // 60: the call that crosses 50 still passes
    const err = await rejection(free.chat.completions.create({ ...call, messages: USER }))
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    expectRefusal(err, 429, 'Throttling.AllocationQuota', 'Free allocated quota exceeded.')
    sim.advance(3_600_000)
    expect(await outcome(free, call)).toBe('Throttling.AllocationQuota') // it does not come back
    expect(await outcome(free, { ...call, model: 'qwen3-max' })).toBe('ok') // each model has its own allowance
  })

  it('answers arrears with 400 Arrearage and free-tier-only with 403', async () => {
    const owing = await rejection(
      client(sim, 'sk-owing').chat.completions.create({ model: 'qwen-plus', messages: USER }),
    )
    expect(owing).toBeInstanceOf(OpenAI.BadRequestError)
    expectRefusal(owing, 400, 'Arrearage', 'make sure your account is in good standing')
    const only = await rejection(
      client(sim, 'sk-freeonly').chat.completions.create({ model: 'qwen-plus', messages: USER }),
    )
    expect(only).toBeInstanceOf(OpenAI.PermissionDeniedError)
    expectRefusal(only, 403, 'AllocationQuota.FreeTierOnly', 'free tier of the model has been exhausted')
    sim.setAccountState('owing', 'ok')
    expect(await outcome(client(sim, 'sk-owing'))).toBe('ok')
    sim.reset() // back to the configured state
    expect(await outcome(client(sim, 'sk-owing'))).toBe('Arrearage')
  })

  it('sends the compatible-mode body exactly, with x-request-id equal to request_id', async () => {
    for (let i = 0; i < 5; i++) await outcome(ai)
    const res = await post(sim, { model: 'qwen-plus', messages: USER })
    const body = JSON.parse(res.text)
    expect(res.status).toBe(429)
    expect(body).toEqual({
      error: {
        message: expect.stringContaining('Requests rate limit exceeded'),
        type: 'limit_requests',
        param: null,
        code: 'limit_requests',
      },
      request_id: res.headers.get('x-request-id'),
    })
    expect(res.headers.get('retry-after')).toBeNull()
  })
})
