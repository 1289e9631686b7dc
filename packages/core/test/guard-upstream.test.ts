/**
 * The guard keeping calls under Qwen's real limits, measured by the simulator (the ground truth):
 * pacing under load with a fair queue, several accounts, classification of every refusal kind and
 * fault, terminal states, and fallback models. Time runs faster in the simulator (timeScale), and
 * the guard is given the matching real-time limits.
 */
import { startSimulator, type Simulator, type SimulatorOptions } from '@qwen-guard/simulator'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createGuard, isQwenGuardError, type Guard, type GuardEvent, type GuardOptions } from '../src/index.js'
import { streamedText } from '../../../test/http-support.js'
import { describeRedis, redisClient } from '../../../test/support/redis.js'

const messages = [{ role: 'user' as const, content: 'Tell me about pacing.' }]
const open: Array<{ close(): Promise<void> }> = []

afterEach(async () => {
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

async function simulator(options: SimulatorOptions): Promise<Simulator> {
  const sim = await startSimulator(options)
  open.push(sim)
  return sim
}

function guardFor(sim: Simulator, options: Omit<GuardOptions, 'upstream'> & { upstream?: GuardOptions['upstream'] }) {
  const upstream = options.upstream ?? {}
  const credentials = upstream.accounts || upstream.apiKey ? {} : { apiKey: 'sk-sim' }
  const guard = createGuard({
    ...options,
    upstream: { baseURL: sim.url, rampUp: false, ...credentials, ...upstream },
  })
  open.push(guard)
  return guard
}

function recordEvents(guard: Guard, type: GuardEvent['type']): GuardEvent[] {
  const seen: GuardEvent[] = []
  guard.on(type, (event) => seen.push(event))
  return seen
}

describe('pacing under load', () => {
  it('20 users at 3x an account RPS: Qwen refuses nothing, every call succeeds or waits out maxWaitMs, no user starves', async () => {
    // qwen-plus at 600 rpm = 10 requests per second. The margin absorbs loopback jitter on a busy
    // 2-core machine: a send that reaches the simulator late bunches with the next one.
    const sim = await simulator({ burst: false, limits: { 'qwen-plus': { rpm: 600, tpm: 10_000_000 } } })
    const guard = guardFor(sim, {
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, safetyMargin: 0.9 },
      models: { 'qwen-plus': { rpm: 600, tpm: 10_000_000 } },
      queue: { maxWaitMs: 1000 },
    })
    const users = Array.from({ length: 20 }, (_, i) => `u${i}`)
    const outcomes = new Map<string, { ok: number; refused: number }>(
      users.map((user) => [user, { ok: 0, refused: 0 }]),
    )
    const errors: unknown[] = []
    // 3x the account's rate (30/s) for 2 s: each user sends 3 calls, spread over the two seconds.
    await Promise.all(
      users.flatMap((user, u) =>
        Array.from({ length: 3 }, async (_, i) => {
          await new Promise((resolve) => setTimeout(resolve, i * 666 + u * 33))
          try {
            await guard.client({ user }).chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
            outcomes.get(user)!.ok++
          } catch (error) {
            errors.push(error)
            outcomes.get(user)!.refused++
          }
        }),
      ),
    )
    const stats = sim.stats().accounts.default!['qwen-plus']!
    expect(stats.refused).toEqual({})
    expect(stats.maxRequestsPer1s).toBeLessThanOrEqual(10)
    for (const error of errors) {
      expect(isQwenGuardError(error)).toBe(true)
      expect(error).toMatchObject({ status: 429, code: 'upstream_saturated', scope: 'upstream' })
      expect((error as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(0)
    }
    const served = [...outcomes.values()].map((outcome) => outcome.ok)
    expect(Math.min(...served)).toBeGreaterThanOrEqual(1)
    expect(Math.max(...served) - Math.min(...served)).toBeLessThanOrEqual(2)
    expect(errors.length).toBeGreaterThan(0) // the load really was over capacity
    expect(stats.accepted).toBe(served.reduce((a, b) => a + b, 0))
  })
})

describe('several accounts', () => {
  it('two accounts carry twice the traffic of one', async () => {
    const limits = { 'qwen-plus': { rpm: 600, tpm: 10_000_000 } }
    const accounts = [
      { id: 'a', keys: ['sk-a'] },
      { id: 'b', keys: ['sk-b'] },
    ]
    const sim = await simulator({ timeScale: 2, burst: false, limits, accounts })
    const run = async (guard: Guard) => {
      const started = Date.now()
      let ok = 0
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          guard
            .client({ user: `u${i % 8}` })
            .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
            .then(
              () => ok++,
              () => undefined,
            ),
        ),
      )
      return { ok, ms: Date.now() - started }
    }
    const one = guardFor(sim, {
      upstream: { baseURL: sim.url, rampUp: false, accounts: [{ id: 'a', apiKey: 'sk-a' }] },
      models: { 'qwen-plus': { rpm: 1200, tpm: 20_000_000 } },
    })
    const single = await run(one)
    sim.reset()
    const two = guardFor(sim, {
      upstream: {
        baseURL: sim.url,
        rampUp: false,
        accounts: [
          { id: 'a', apiKey: 'sk-a' },
          { id: 'b', apiKey: 'sk-b' },
        ],
      },
      models: { 'qwen-plus': { rpm: 1200, tpm: 20_000_000 } },
    })
    const double = await run(two)
    expect(single.ok).toBe(40)
    expect(double.ok).toBe(40)
    // Same work, twice the capacity: about half the time (pacing-bound, 20/s vs 40/s).
    expect(double.ms).toBeLessThan(single.ms * 0.7)
    const stats = sim.stats().accounts
    expect(stats.a?.['qwen-plus']?.accepted).toBeGreaterThan(12)
    expect(stats.b?.['qwen-plus']?.accepted).toBeGreaterThan(12)
  })

  it('a refusal on one account moves the call to the other, and a terminal one takes it out of rotation', async () => {
    const sim = await simulator({
      burst: false,
      accounts: [
        { id: 'a', keys: ['sk-a'], state: 'arrears' },
        { id: 'b', keys: ['sk-b'] },
      ],
    })
    const guard = guardFor(sim, {
      upstream: {
        baseURL: sim.url,
        rampUp: false,
        accounts: [
          { id: 'a', apiKey: 'sk-a' },
          { id: 'b', apiKey: 'sk-b' },
        ],
      },
    })
    const disabled = recordEvents(guard, 'account_disabled')
    for (let i = 0; i < 4; i++) {
      await guard.client({ user: 'x' }).chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    }
    expect(disabled).toHaveLength(1)
    expect(disabled[0]).toMatchObject({ account: 'a', kind: 'arrears' })
    const stats = sim.stats()
    expect(stats.accounts.b?.['qwen-plus']?.accepted).toBe(4)
    expect(stats.refused.Arrearage).toBe(1) // account a was tried once, then left alone
  })

  it('answers 503 with a wait when every account is out of service', async () => {
    const sim = await simulator({ burst: false, accounts: [{ id: 'only', keys: ['sk-o'], state: 'free_tier_only' }] })
    const guard = guardFor(sim, { upstream: { baseURL: sim.url, rampUp: false, apiKey: 'sk-o' } })
    const error = await guard
      .client({ user: 'y' })
      .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
      .catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 503, code: 'upstream_unavailable' })
    expect(JSON.stringify((error as { error: unknown }).error)).not.toMatch(/sk-o|only/)
  })

  it('an invalid key: the first refusal and the next name the same wait (the disable) and message', async () => {
    const sim = await simulator({ burst: false })
    const guard = guardFor(sim, { upstream: { baseURL: sim.url, rampUp: false, apiKey: 'sk-wrong' } })
    const ask = () =>
      guard
        .client({ user: 'z' })
        .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
        .catch((e: unknown) => e)
    const first = await ask()
    const second = await ask()
    for (const error of [first, second]) {
      expect(error).toMatchObject({ status: 503, code: 'upstream_unavailable' })
      expect(isQwenGuardError(error) && error.message).toMatch(/No Qwen account can serve this model right now\.$/)
      // upstream.disableMs (1 h by default), not the 1 s floor
      expect(isQwenGuardError(error) && error.retryAfterMs).toBeGreaterThan(3_590_000)
    }
  })
})

describe('refusals and faults are classified', () => {
  const cases = [
    { fault: { kind: 'internal-error' as const, times: 1 }, kind: 'server' },
    { fault: { kind: 'overloaded' as const, times: 1 }, kind: 'server' },
    { fault: { kind: 'sse-error-body' as const, times: 1 }, kind: 'requests' },
    { fault: { kind: 'native-error-body' as const, times: 1 }, kind: 'requests' },
    { fault: { kind: 'stream-error-native' as const, times: 1, afterChunks: 0 }, kind: 'tokens', stream: true },
    { fault: { kind: 'stream-error' as const, times: 1, afterChunks: 0 }, kind: 'burst', stream: true },
    { fault: { kind: 'reset' as const, times: 1 }, kind: 'network' },
  ]
  for (const { fault, kind, stream } of cases) {
    it(`${fault.kind} -> ${kind}, retried to success`, async () => {
      const sim = await simulator({ burst: false })
      const guard = guardFor(sim, {})
      const refusals = recordEvents(guard, 'upstream_refusal')
      sim.inject(fault)
      const client = guard.client({ user: 'z' })
      if (stream) {
        expect((await streamedText(client, messages)).length).toBeGreaterThan(0)
      } else {
        const completion = await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
        expect(completion.choices[0]?.message.content).toBeTruthy()
      }
      expect(refusals.map((event) => (event as { kind: string }).kind)).toEqual([kind])
    })
  }

  it('an error after the first chunk ends the stream with an OpenAI-style error, not a silent cut', async () => {
    const sim = await simulator({ burst: false })
    const guard = guardFor(sim, {})
    sim.inject({ kind: 'stream-error', times: 1, afterChunks: 2 })
    const chunks = await guard
      .client({ user: 'w' })
      .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 20, stream: true })
    let text = ''
    const failure = await (async () => {
      for await (const chunk of chunks) text += chunk.choices[0]?.delta?.content ?? ''
    })().catch((e: unknown) => e)
    expect(text.length).toBeGreaterThan(0)
    expect(failure).toBeInstanceOf(Error)
    expect(String((failure as Error).message)).toMatch(/midway/)
  })

  it('moderation comes back as 400 content_filter without a retry', async () => {
    const sim = await simulator({ burst: false })
    const guard = guardFor(sim, {})
    sim.inject({ kind: 'sse-error-body', status: 400, code: 'data_inspection_failed', times: 1 })
    const error = await guard
      .client({ user: 'm' })
      .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
      .catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 400, code: 'content_filter' })
    expect(sim.stats().calls).toBe(1)
  })
})

describe('fallback models', () => {
  it('a saturated qwen3-max spills to qwen-plus and the answer says which model served it', async () => {
    const sim = await simulator({ timeScale: 2, burst: false, limits: { 'qwen3-max': { rpm: 60 } } })
    const guard = guardFor(sim, {
      models: { 'qwen3-max': { rpm: 120, fallback: ['qwen-plus'] }, 'qwen-plus': { rpm: 1200 } },
      queue: { maxWaitMs: 200 },
    })
    const fallbacks = recordEvents(guard, 'fallback')
    const served = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const { data, response } = await guard
          .client({ user: `f${i}` })
          .chat.completions.create({ model: 'qwen3-max', messages, max_tokens: 5 })
          .withResponse()
        return { model: data.model, header: response.headers.get('x-qwen-guard-model') }
      }),
    )
    const models = served.map((answer) => answer.model)
    expect(models).toContain('qwen3-max')
    expect(models).toContain('qwen-plus')
    for (const answer of served) expect(answer.header).toBe(answer.model)
    expect(fallbacks.length).toBe(models.filter((model) => model === 'qwen-plus').length)
    expect(sim.stats().accounts.default?.['qwen3-max']?.refused).toEqual({})
  })
})

describeRedis('an invalid key, then the corrected key, on one Redis', () => {
  const { redis, prefix } = redisClient()
  it("the corrected key does not inherit the invalid one's hour of disable (the same account id)", async () => {
    const sim = await simulator({ burst: false })
    const call = (guard: Guard) =>
      guard
        .client({ user: 'u' })
        .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
        .then(
          () => 200,
          (error: { status?: number }) => error.status,
        )
    const store = { redis: redis as never, prefix: `${prefix}-rekey` }
    const wrong = guardFor(sim, { upstream: { baseURL: sim.url, rampUp: false, apiKey: 'sk-wrong' }, store })
    expect(await call(wrong)).toBe(503)
    await wrong.close()
    const again = guardFor(sim, { upstream: { baseURL: sim.url, rampUp: false, apiKey: 'sk-wrong' }, store })
    const calls = sim.stats().calls
    expect(await call(again)).toBe(503) // the same key: disabled by the shared state, Qwen not asked again
    expect(sim.stats().calls).toBe(calls)
    await again.close()
    const fixed = guardFor(sim, { upstream: { baseURL: sim.url, rampUp: false, apiKey: 'sk-sim' }, store })
    expect(await call(fixed)).toBe(200)
  })
})

describe('an account Qwen puts out of service, with nobody listening', () => {
  const ask = (guard: Guard) =>
    guard
      .client({ user: 'u' })
      .chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
      .catch(() => undefined)

  it('is logged once, naming the option to check and neither the key nor the account id', async () => {
    const sim = await simulator({ burst: false })
    const lines: string[] = []
    const spy = vi.spyOn(console, 'error').mockImplementation((line: unknown) => void lines.push(String(line)))
    try {
      const guard = guardFor(sim, {
        upstream: {
          baseURL: sim.url,
          rampUp: false,
          accounts: [
            { id: 'acct-private-9', apiKey: 'sk-wrong-private' },
            { id: 'acct-two', apiKey: 'sk-sim' },
          ],
        },
      })
      for (let i = 0; i < 3; i++) await ask(guard)
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(/^\[qwen-guard\] Qwen put account 1 of 2 out of service for every model \(invalid_key\)/)
      expect(lines[0]).toContain('upstream.accounts[0]')
      expect(lines[0]).not.toMatch(/acct-private|sk-wrong|private/)

      lines.length = 0
      const heard: GuardEvent[] = []
      const listened = guardFor(sim, { upstream: { baseURL: sim.url, rampUp: false, apiKey: 'sk-wrong' } })
      listened.on('account_disabled', (event) => heard.push(event))
      await ask(listened)
      expect(heard).toHaveLength(1)
      expect(lines).toEqual([]) // the app reports it its own way
    } finally {
      spy.mockRestore()
    }
  })
})
