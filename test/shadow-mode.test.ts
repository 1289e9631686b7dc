/**
 * Shadow mode (issue 13 item 2) against the simulator, on both stores: a policy with
 * `mode: 'shadow'` admits what the same policy enforced refuses, and counts it (the shadow_refused
 * event, `qwen_guard_decisions_total{outcome="shadow_refused"}`, the decision header), through the
 * real openai SDK and through the relay. Its counters hold only what enforcing would have admitted,
 * so enforced scopes beside it and a later switch to enforcing stay exact; shadow limits never show
 * in the answer's rate-limit headers; a quotas function may shadow some identities only.
 */
import express from 'express'
import OpenAI from 'openai'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, expect, it } from 'vitest'
import {
  createGuard,
  isQwenGuardError,
  type GuardEvent,
  type GuardOptions,
  type QuotaOption,
} from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { startSimulator, type Simulator } from '../packages/simulator/src/index.js'
import { listen } from './http-support.js'
import { describeEachStore, redisClient, type StoreKind } from './support/redis.js'

const KEY = 'sk-shadow-secret-key-41aa'
const ACCOUNT = 'acct-shadow'
const messages = [{ role: 'user' as const, content: 'hello' }]
const ask = { model: 'qwen-plus', messages, max_tokens: 16 }

let sim: Simulator
beforeAll(async () => {
  // Generous upstream limits: every guard of the file shares the account.
  sim = await startSimulator({
    accounts: [{ id: ACCOUNT, keys: [KEY] }],
    burst: false,
    limits: { 'qwen-plus': { rpm: 60_000, rps: 1_000 } },
  })
})
afterAll(() => sim.close())

type ShadowEvent = Extract<GuardEvent, { type: 'shadow_refused' }>

async function decisions(registry: Registry, labels: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric('qwen_guard_decisions_total')
  if (!metric) throw new Error('no decisions metric')
  const { values } = await metric.get()
  return values
    .filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l))
    .reduce((sum, v) => sum + v.value, 0)
}

function accepted(): number {
  return sim.stats().accepted
}

describeEachStore('shadow mode', (kind: StoreKind) => {
  const store = kind === 'redis' ? redisClient() : undefined
  let n = 0
  /** A guard on this suite's store; each gets its own key prefix unless `prefix` is given. */
  function guardWith(quotas: QuotaOption, extra: Partial<GuardOptions> = {}, prefix?: string) {
    const registry = new Registry()
    n += 1
    const guard = createGuard({
      upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
      quotas,
      metrics: { registry },
      headers: { decision: true },
      ...(store ? { store: { redis: store.redis, prefix: prefix ?? `${store.prefix}-${n}` } } : {}),
      ...extra,
    })
    const shadowed: ShadowEvent[] = []
    guard.on('shadow_refused', (e) => shadowed.push(e))
    return { guard, registry, shadowed }
  }

  it('admits through the openai SDK what enforcing refuses, and counts it', async () => {
    const enforcing = guardWith({ user: { rpm: 2 } })
    const shadow = guardWith({ user: { rpm: 2, mode: 'shadow' } })
    const enforced = enforcing.guard.client({ user: 'u-shadow-1' })
    const outcomes: string[] = []
    for (let i = 0; i < 4; i++) {
      outcomes.push(
        await enforced.chat.completions.create(ask).then(
          () => 'ok',
          (e: unknown) => (isQwenGuardError(e) ? `${e.status} ${e.scope}-${e.dimension}` : 'other'),
        ),
      )
    }
    expect(outcomes).toEqual(['ok', 'ok', '429 user-rpm', '429 user-rpm'])

    const before = accepted()
    const client = shadow.guard.client({ user: 'u-shadow-1' })
    const decisionsSeen: string[] = []
    const rateLimitPolicies: Array<string | null> = []
    for (let i = 0; i < 4; i++) {
      const { data, response } = await client.chat.completions.create(ask).withResponse()
      expect(data.choices[0]?.message.content).toBeTruthy()
      decisionsSeen.push(response.headers.get('x-qwen-guard-decision') ?? '')
      rateLimitPolicies.push(response.headers.get('ratelimit-policy'))
    }
    expect(accepted() - before).toBe(4) // every call reached Qwen
    expect(decisionsSeen.map((d) => d.split(';')[0])).toEqual([
      'admitted',
      'admitted',
      'shadow_refused',
      'shadow_refused',
    ])
    expect(decisionsSeen[2]).toMatch(/^shadow_refused;queued-ms=\d+;binding="user-rpm";call-id="[^"]+"$/)
    // The shadow limit never reaches a client: no RateLimit fields, no x-ratelimit-* for it.
    expect(rateLimitPolicies).toEqual([null, null, null, null])

    expect(shadow.shadowed).toHaveLength(2)
    for (const event of shadow.shadowed) {
      expect(event).toMatchObject({
        shadow: true,
        scope: 'user',
        dimension: 'rpm',
        code: 'rate_limit_exceeded',
        identity: { user: 'u-shadow-1' },
        model: 'qwen-plus',
      })
      expect(event.retryAfterMs).toBeGreaterThan(0)
    }
    await shadow.guard.metrics().scrape()
    expect(await decisions(shadow.registry, { scope: 'user', dimension: 'rpm', outcome: 'shadow_refused' })).toBe(2)
    expect(await decisions(shadow.registry, { outcome: 'admitted' })).toBe(4)
    expect(await decisions(shadow.registry, { outcome: 'refused' })).toBe(0)
    expect(await decisions(enforcing.registry, { scope: 'user', dimension: 'rpm', outcome: 'refused' })).toBe(2)

    // The shadow counter holds what enforcing would have admitted: 2 of 2, not 4.
    const state = await shadow.guard.state({ user: 'u-shadow-1' })
    expect(state).toEqual([
      expect.objectContaining({ scope: 'user', dimension: 'rpm', limit: 2, remaining: 0, shadow: true }),
    ])
    const check = await shadow.guard.check({ user: 'u-shadow-1' }, ask)
    expect(check).toMatchObject({ allowed: true, shadowBlockedBy: [{ scope: 'user', dimension: 'rpm' }] })
    await Promise.all([enforcing.guard.close(), shadow.guard.close()])
  })

  it('charges enforced scopes for every admitted call and shadow scopes only for what enforcing admits', async () => {
    // The key is enforced at 3 rpm, the user shadowed at 1 rpm.
    const { guard, shadowed } = guardWith({ user: { rpm: 1, mode: 'shadow' }, key: { rpm: 3 } })
    const client = guard.client({ user: 'u-mixed', key: 'k-mixed' })
    const outcomes: string[] = []
    for (let i = 0; i < 4; i++) {
      outcomes.push(
        await client.chat.completions.create(ask).then(
          () => 'ok',
          (e: unknown) => (isQwenGuardError(e) ? `${e.status} ${e.scope}-${e.dimension}` : 'other'),
        ),
      )
    }
    // The key's enforced limit still refuses the fourth call: shadow calls were charged on it.
    expect(outcomes).toEqual(['ok', 'ok', 'ok', '429 key-rpm'])
    // Calls 2 and 3 would have been refused by the user limit; call 4 was refused for real (no shadow event).
    expect(shadowed.map((e) => `${e.scope}-${e.dimension}`)).toEqual(['user-rpm', 'user-rpm'])
    const state = await guard.state({ user: 'u-mixed', key: 'k-mixed' })
    const byScope = Object.fromEntries(state.map((s) => [s.scope, s]))
    expect(byScope.user).toMatchObject({ limit: 1, remaining: 0, shadow: true })
    expect(byScope.key).toMatchObject({ limit: 3, remaining: 0 })
    expect(byScope.key?.shadow).toBeUndefined()
    await guard.close()
  })

  it('a later switch to enforcing sees exactly what enforcing would have counted', async () => {
    const prefix = store ? `${store.prefix}-switch` : undefined
    const shadow = guardWith({ user: { tpm: 100_000, rpm: 3, mode: 'shadow' } }, {}, prefix)
    const client = shadow.guard.client({ user: 'u-switch' })
    for (let i = 0; i < 5; i++) await client.chat.completions.create(ask)
    expect(shadow.shadowed).toHaveLength(2)
    if (!store) {
      // Memory: the state is this guard's own; what it counts is what enforcing would hold.
      const [rpm] = (await shadow.guard.state({ user: 'u-switch' })).filter((s) => s.dimension === 'rpm')
      expect(rpm).toMatchObject({ limit: 3, remaining: 0 })
      await shadow.guard.close()
      return
    }
    // Redis: an enforcing guard on the same keys refuses the next call, as if it had enforced all along.
    const enforcing = guardWith({ user: { tpm: 100_000, rpm: 3 } }, {}, prefix)
    const [rpm] = (await enforcing.guard.state({ user: 'u-switch' })).filter((s) => s.dimension === 'rpm')
    expect(rpm).toMatchObject({ limit: 3, remaining: 0 })
    const next = await enforcing.guard
      .client({ user: 'u-switch' })
      .chat.completions.create(ask)
      .catch((e: unknown) => e)
    expect(isQwenGuardError(next) && `${next.scope}-${next.dimension}`).toBe('user-rpm')
    await Promise.all([shadow.guard.close(), enforcing.guard.close()])
  })

  it('a quotas function shadows some identities and enforces others', async () => {
    const { guard, shadowed } = guardWith((identity) =>
      identity.user?.startsWith('canary-') ? { user: { rpm: 1, mode: 'shadow' } } : { user: { rpm: 1 } },
    )
    const canary = guard.client({ user: 'canary-1' })
    const regular = guard.client({ user: 'regular-1' })
    await canary.chat.completions.create(ask)
    await canary.chat.completions.create(ask)
    await regular.chat.completions.create(ask)
    const refused = await regular.chat.completions.create(ask).catch((e: unknown) => e)
    expect(isQwenGuardError(refused) && refused.status).toBe(429)
    expect(shadowed.map((e) => e.identity.user)).toEqual(['canary-1'])
    await guard.close()
  })

  it('a shadow limit no wait can meet, and a shadow concurrency limit, report and admit', async () => {
    const { guard, shadowed, registry } = guardWith({ user: { tpm: 10, concurrency: 1, mode: 'shadow' } })
    const client = guard.client({ user: 'u-never' })
    // 16 max_tokens + the prompt > 10 tokens per minute: enforcing answers 413 at once.
    const first = await client.chat.completions.create({ ...ask, stream: true })
    // While the first stream holds... nothing: the first call was shadow-refused on tpm, so it took no lease.
    const second = await client.chat.completions.create(ask)
    expect(second.choices[0]?.message.content).toBeTruthy()
    for await (const chunk of first) void chunk
    expect(shadowed.map((e) => [e.dimension, e.code])).toEqual([
      ['tpm', 'request_too_large'],
      ['tpm', 'request_too_large'],
    ])
    await guard.metrics().scrape()
    expect(await decisions(registry, { scope: 'user', dimension: 'tpm', outcome: 'shadow_refused' })).toBe(2)
    const state = await guard.state({ user: 'u-never' })
    expect(state.find((s) => s.dimension === 'tpm')).toMatchObject({ remaining: 10 }) // nothing charged
    await guard.close()

    // Concurrency: two streams at once over a shadow limit of one: both served, one reported.
    const conc = guardWith({ user: { concurrency: 1, mode: 'shadow' } })
    const c = conc.guard.client({ user: 'u-conc' })
    const a = await c.chat.completions.create({ ...ask, stream: true })
    const b = await c.chat.completions.create({ ...ask, stream: true })
    for await (const chunk of a) void chunk
    for await (const chunk of b) void chunk
    expect(conc.shadowed.map((e) => [e.dimension, e.code])).toEqual([['concurrency', 'concurrency_limit_exceeded']])
    await new Promise((resolve) => setTimeout(resolve, 50)) // the streams' settlement releases the lease
    const [lease] = await conc.guard.state({ user: 'u-conc' })
    expect(lease).toMatchObject({ dimension: 'concurrency', limit: 1, remaining: 1, shadow: true })
    await conc.guard.close()
  })

  it('through the relay: shadow-refused calls are answered 200 with the decision header', async () => {
    n += 1
    const guard = expressGuard({
      upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
      quotas: { user: { rpm: 1, mode: 'shadow' } },
      headers: { decision: true },
      identify: (req) => ({ user: String(req.headers['x-user'] ?? 'anon') }),
      ...(store ? { store: { redis: store.redis, prefix: `${store.prefix}-relay` } } : {}),
    })
    const shadowed: ShadowEvent[] = []
    guard.guard.on('shadow_refused', (e) => shadowed.push(e))
    const app = express()
    app.use('/v1', guard.proxy())
    const running = await listen(app)
    const client = new OpenAI({
      apiKey: 'client-key',
      baseURL: `${running.url}/v1`,
      maxRetries: 0,
      defaultHeaders: { 'x-user': 'relay-user' },
    })
    const first = await client.chat.completions.create(ask).withResponse()
    const second = await client.chat.completions.create({ ...ask, stream: true }).withResponse()
    for await (const chunk of second.data) void chunk
    expect(first.response.headers.get('x-qwen-guard-decision')).toMatch(/^admitted;/)
    expect(second.response.status).toBe(200)
    expect(second.response.headers.get('x-qwen-guard-decision')).toMatch(
      /^shadow_refused;queued-ms=\d+;binding="user-rpm";call-id="/,
    )
    expect(second.response.headers.get('ratelimit')).toBeNull()
    expect(shadowed).toHaveLength(1)
    await running.close()
    await guard.close()
  })
})
