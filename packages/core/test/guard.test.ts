/**
 * The whole guard against the simulator: reservation and settlement (plain, streamed, aborted),
 * concurrency leases, the openai client surface. Runs on the memory store and on a real Redis.
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import OpenAI from 'openai'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { createGuard, isQwenGuardError, QwenGuardError, type Guard, type GuardOptions } from '../src/index.js'
import { MAX_TIMER_MS } from '../src/options.js'
import { describeEachStore, redisClient } from '../../../test/support/redis.js'

const messages = [{ role: 'user' as const, content: 'Say something about rate limits.' }]

function tpmLeft(states: Awaited<ReturnType<Guard['state']>>): number {
  const state = states.find((s) => s.scope === 'user' && s.dimension === 'tpm')
  if (!state) throw new Error('no user tpm state')
  return state.remaining
}

describeEachStore('guard end to end', (kind) => {
  let sim: Simulator
  const guards: Guard[] = []
  let made = 0
  const redis = kind === 'redis' ? redisClient() : undefined

  beforeAll(async () => {
    // A request that sets no max_tokens: the guard reserves its defaultMaxTokens (100) and sends it
    // as max_tokens, so the simulator answers exactly 100 tokens.
    sim = await startSimulator({ burst: false, defaultMaxTokens: 100, perTokenMs: 2 })
  })
  afterEach(async () => {
    sim.clearFaults()
    await Promise.all(guards.splice(0).map((guard) => guard.close()))
  })
  afterAll(async () => {
    await sim.close()
  })

  function makeGuard(overrides: Partial<GuardOptions> = {}): Guard {
    const guard = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, ...overrides.upstream },
      quotas: { user: { rpm: 100, tpm: 100_000 } },
      defaultMaxTokens: 100,
      // A prefix per guard: on Redis a cooldown is shared by every guard on the same prefix.
      ...(redis ? { store: { redis: redis.redis, prefix: `${redis.prefix}-${++made}` } } : {}),
      ...overrides,
    })
    guards.push(guard)
    return guard
  }

  it('reserves prompt + default max tokens and refunds down to usage after a plain call', async () => {
    const guard = makeGuard()
    const identity = { user: 'plain' }
    const before = tpmLeft(await guard.state(identity))
    const completion = await guard.client(identity).chat.completions.create({ model: 'qwen-plus', messages })
    expect(completion.usage?.completion_tokens).toBe(100)
    expect(tpmLeft(await guard.state(identity))).toBe(before - completion.usage!.total_tokens)
  })

  it('settles a stream from its usage chunk and hides that chunk from a caller that did not ask', async () => {
    const guard = makeGuard()
    const identity = { user: 'stream' }
    const before = tpmLeft(await guard.state(identity))
    const simBefore = sim.stats().accounts.default?.['qwen-plus']?.totalTokens ?? 0
    const stream = await guard.client(identity).chat.completions.create({ model: 'qwen-plus', messages, stream: true })
    let text = ''
    let usageChunks = 0
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? ''
      if (chunk.usage) usageChunks++
    }
    expect(text.length).toBeGreaterThan(0)
    expect(usageChunks).toBe(0)
    const charged = sim.stats().accounts.default!['qwen-plus']!.totalTokens - simBefore
    expect(tpmLeft(await guard.state(identity))).toBe(before - charged)
  })

  it('passes the usage chunk through when the caller asked for it', async () => {
    const guard = makeGuard()
    const stream = await guard.client({ user: 'usage' }).chat.completions.create({
      model: 'qwen-plus',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    })
    const usages = []
    for await (const chunk of stream) if (chunk.usage) usages.push(chunk.usage)
    expect(usages).toHaveLength(1)
    expect(usages[0]?.completion_tokens).toBe(100)
  })

  it('settles a stream aborted halfway from what was streamed', async () => {
    const guard = makeGuard()
    const identity = { user: 'abort' }
    const before = tpmLeft(await guard.state(identity))
    const stream = await guard.client(identity).chat.completions.create({ model: 'qwen-plus', messages, stream: true })
    let chunks = 0
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) chunks++
      if (chunks === 20) break
    }
    // Charged: the prompt estimate plus about the 20 streamed tokens, below the 100 reserved.
    await vi.waitFor(async () => {
      const used = before - tpmLeft(await guard.state(identity))
      expect(used).toBeGreaterThanOrEqual(20)
      expect(used).toBeLessThan(100)
    })
    await vi.waitFor(() => expect(sim.stats().inFlight).toBe(0))
  })

  it('honours the longest timeoutMs and streamIdleMs it accepts (2^31 - 1 ms), a longer one is a config error', async () => {
    // Node fires a timer longer than 2^31 - 1 ms after 1 ms: a timeoutMs of 2^31 made every call a 504
    // at once, a streamIdleMs of 3e9 ended every stream that paused (here 2 ms a token).
    const upstream = { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false as const }
    const guard = makeGuard({ upstream: { ...upstream, timeoutMs: MAX_TIMER_MS, streamIdleMs: MAX_TIMER_MS } })
    sim.inject({ kind: 'slow-first-byte', delayMs: 30, times: 1 })
    const client = guard.client({ user: 'long-timers' })
    const completion = await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    expect(completion.usage?.completion_tokens).toBe(5)
    const stream = await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 20, stream: true })
    let tokens = 0
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) tokens++
    expect(tokens).toBe(20)
    expect(() => createGuard({ upstream: { ...upstream, timeoutMs: MAX_TIMER_MS + 1 } })).toThrow(
      /^upstream\.timeoutMs: must be at most 2147483647 ms/,
    )
  })

  describe('the concurrency lease is released', () => {
    // A fresh guard per case: a 500 cools the account down, which would delay the next case's call.
    function leaseCase() {
      const guard = makeGuard({
        quotas: { user: { concurrency: 1 } },
        upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, timeoutMs: 400, maxAttempts: 1 },
      })
      const client = guard.client({ user: 'lease' })
      return {
        call: (signal?: AbortSignal) =>
          client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 }, signal ? { signal } : {}),
        leaseFree: async () => (await guard.check({ user: 'lease' }, { model: 'qwen-plus', messages })).allowed,
      }
    }

    it('on success', async () => {
      const { call, leaseFree } = leaseCase()
      sim.inject({ kind: 'slow-first-byte', delayMs: 300, times: 1 })
      const pending = call()
      await vi.waitFor(async () => expect(await leaseFree()).toBe(false))
      await pending
      expect(await leaseFree()).toBe(true)
    })

    it('on an upstream error', async () => {
      const { call, leaseFree } = leaseCase()
      sim.inject({ kind: 'internal-error', times: 1 })
      await expect(call()).rejects.toMatchObject({ status: 502, code: 'upstream_error' })
      expect(await leaseFree()).toBe(true)
    })

    it('on abort', async () => {
      const { call, leaseFree } = leaseCase()
      sim.inject({ kind: 'hang', times: 1 })
      const controller = new AbortController()
      const aborted = call(controller.signal)
      await vi.waitFor(() => expect(sim.stats().inFlight).toBe(1))
      expect(await leaseFree()).toBe(false)
      controller.abort()
      await expect(aborted).rejects.toThrow()
      await vi.waitFor(async () => expect(await leaseFree()).toBe(true))
    })

    it('on timeout', async () => {
      const { call, leaseFree } = leaseCase()
      sim.inject({ kind: 'hang', times: 1 })
      await expect(call()).rejects.toMatchObject({ status: 504, code: 'upstream_timeout' })
      expect(await leaseFree()).toBe(true)
      await call()
    })
  })

  it('refuses a user over rpm with scope, dimension and a wait, without calling Qwen', async () => {
    const guard = makeGuard({ quotas: { user: { rpm: 2 } } })
    const client = guard.client({ user: 'rpm' })
    await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    const callsBefore = sim.stats().calls
    const error = await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 }).catch((e) => e)
    expect(isQwenGuardError(error)).toBe(true)
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect(error).toMatchObject({ status: 429, scope: 'user', dimension: 'rpm', code: 'rate_limit_exceeded' })
    expect((error as QwenGuardError).retryAfterMs).toBeGreaterThan(55_000)
    expect((error as QwenGuardError).retryAfterMs).toBeLessThanOrEqual(60_000)
    expect(sim.stats().calls).toBe(callsBefore)
  })

  it('lists models locally and rejects an invalid body before counting anything', async () => {
    const guard = makeGuard()
    const client = guard.client({ user: 'models' })
    const list = await client.models.list()
    expect(list.data.map((model) => model.id)).toContain('qwen3-max')
    const callsBefore = sim.stats().calls
    const remaining = async () => (await guard.state({ user: 'models' })).map((state) => state.remaining)
    const before = await remaining()
    await expect(
      client.chat.completions.create({ model: 'qwen-plus', messages: [], max_tokens: 5 }),
    ).rejects.toMatchObject({ status: 400 })
    expect(await remaining()).toEqual(before)
    expect(sim.stats().calls).toBe(callsBefore)
  })
})

describe('guard.client() per identity', () => {
  const answer = JSON.stringify({
    id: 'c1',
    object: 'chat.completion',
    created: 1,
    model: 'qwen-plus',
    choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
  })
  const makeGuard = () =>
    createGuard({
      upstream: {
        baseURL: 'http://127.0.0.1:9/v1',
        apiKey: 'sk-x',
        rampUp: false,
        fetch: (async () => new Response(answer)) as typeof fetch,
      },
      quotas: { user: { rpm: 100 }, key: { rpm: 100 } },
    })
  const rpmLeft = async (guard: Guard, identity: { user?: string; key?: string }) =>
    (await guard.state(identity)).map((s) => `${s.scope}:${s.remaining}`)

  it('keeps one client per user and key, and charges each call to its own identity', async () => {
    const guard = makeGuard()
    expect(guard.client({ user: 'a' })).toBe(guard.client({ user: 'a' }))
    expect(guard.client({ user: 'a', key: 'k' })).toBe(guard.client({ key: 'k', user: 'a' }))
    const tricky = [
      { user: 'a' },
      { user: 'a|+b' },
      { user: 'a', key: 'b' },
      { user: 'b', key: 'a' },
      { user: '-' },
      { user: '1:a' },
      { user: '1:a|-' },
    ]
    const made = tricky.map((identity) => guard.client(identity))
    expect(new Set(made).size).toBe(tricky.length)
    await made[1]!.chat.completions.create({ model: 'qwen-plus', messages })
    expect(await rpmLeft(guard, { user: 'a|+b' })).toEqual(['user:99'])
    expect(await rpmLeft(guard, { user: 'a', key: 'b' })).toEqual(['user:100', 'key:100'])
    await guard.close()
  })

  it('does not follow later changes to the identity object, and gives other identity shapes their own client', async () => {
    const guard = makeGuard()
    const identity = { user: 'first' }
    const client = guard.client(identity)
    identity.user = 'second'
    await client.chat.completions.create({ model: 'qwen-plus', messages })
    expect(await rpmLeft(guard, { user: 'first' })).toEqual(['user:99'])
    expect(await rpmLeft(guard, { user: 'second' })).toEqual(['user:100'])
    const extended = { user: 'first', tier: 'pro' } as { user: string }
    expect(guard.client(extended)).not.toBe(guard.client(extended))
    await guard.close()
  })
})
