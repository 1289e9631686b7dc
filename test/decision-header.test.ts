/**
 * The decision header (issue 13 item 3), `headers: { decision: true }`: one `x-qwen-guard-decision`
 * on every answer of a chat call, a valid RFC 8941 Item (Token + Parameters), on JSON answers,
 * streams and refusals alike: through the guarded openai client (`.withResponse()`, `err.headers`),
 * the relay of both adapters, Express `guard.errors` and the Koa middleware. Off by default.
 */
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, isQwenGuardError, type GuardOptions } from '../packages/core/src/index.js'
import { startSimulator, type Simulator } from '../packages/simulator/src/index.js'
import { ResponseTap, startApp, type Framework } from './http-support.js'

const KEY = 'sk-decision-secret-key-9c1d'
const ACCOUNT = 'acct-decision'
const messages = [{ role: 'user' as const, content: 'hello' }]
const ask = { model: 'qwen-plus', messages, max_tokens: 16 }
const HEADER = 'x-qwen-guard-decision'

let sim: Simulator
beforeAll(async () => {
  // Generous upstream limits: the suites share the account, and a 429 from Qwen would make a call queue.
  sim = await startSimulator({
    accounts: [{ id: ACCOUNT, keys: [KEY] }],
    burst: false,
    limits: { 'qwen-plus': { rpm: 60_000, rps: 1_000 } },
  })
})
afterAll(() => sim.close())

function options(extra: Partial<GuardOptions> = {}): GuardOptions {
  return {
    upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
    // The simulator's generous limits, so the guard's own pacing never spaces two calls in a row
    // (a spaced call would name the upstream dimension it waited for, not the user's).
    models: { 'qwen-plus': { rpm: 60_000, rps: 1_000, tpm: 100_000_000, tps: 10_000_000 } },
    quotas: { user: { rpm: 2, tpm: 100_000 } },
    headers: { decision: true },
    ...extra,
  }
}

/**
 * RFC 8941 section 4.2.3 (parsing an Item) for a Token with Parameters, strict: the bare item is a
 * token; each parameter key is lcalpha / "*" then lcalpha / DIGIT / "_" / "-" / "." / "*", its value
 * an sf-integer, an sf-string or a token. Throws on anything else.
 */
function parseItem(text: string): { token: string; params: Record<string, string | number> } {
  const item = /^([A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*)((?:;\s*[a-z*][a-z0-9_\-.*]*(?:=[^;]*)?)*)$/.exec(text)
  if (!item) throw new Error(`not an sf-item: ${text}`)
  const params: Record<string, string | number> = {}
  for (const part of item[2]!.split(';').slice(1)) {
    const [, key, value] = /^\s*([a-z*][a-z0-9_\-.*]*)=(.*)$/.exec(part) ?? []
    if (!key || value === undefined) throw new Error(`bad parameter ${part}`)
    if (/^-?\d{1,15}$/.test(value)) params[key] = Number(value)
    else if (/^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"$/.test(value))
      params[key] = value.slice(1, -1).replace(/\\(["\\])/g, '$1')
    else throw new Error(`bad parameter value ${value}`)
  }
  return { token: item[1]!, params }
}

describe('decision header through the guarded openai client', () => {
  it('admitted on JSON answers and streams, refused on the SDK error, with the binding limit', async () => {
    const guard = createGuard(options())
    const client = guard.client({ user: 'u-decision' })
    const json = await client.chat.completions.create(ask).withResponse()
    const first = parseItem(json.response.headers.get(HEADER)!)
    expect(first.token).toBe('admitted')
    // Not queued: queued-ms is only the pool's own decision (a few ms at most on a cold lane).
    expect(first.params).toEqual({
      'queued-ms': expect.any(Number),
      binding: 'user-rpm',
      'call-id': expect.any(String),
    })
    expect(first.params['queued-ms']).toBeLessThan(100)

    const stream = await client.chat.completions.create({ ...ask, stream: true }).withResponse()
    for await (const chunk of stream.data) void chunk
    const second = parseItem(stream.response.headers.get(HEADER)!)
    expect(second).toMatchObject({ token: 'admitted', params: { binding: 'user-rpm' } })
    expect(second.params['call-id']).not.toBe(first.params['call-id'])

    const refused = await client.chat.completions.create(ask).catch((e: unknown) => e)
    expect(isQwenGuardError(refused)).toBe(true)
    const third = parseItem((refused as { headers: Headers }).headers.get(HEADER)!)
    expect(third).toEqual({ token: 'refused', params: { binding: 'user-rpm', 'call-id': expect.any(String) } })
    // A request refused before it became a call (validation) has no call id.
    const invalid = await client.chat.completions.create({ ...ask, max_tokens: -1 }).catch((e: unknown) => e)
    expect(isQwenGuardError(invalid) && invalid.status).toBe(400)
    expect(parseItem((invalid as { headers: Headers }).headers.get(HEADER)!)).toEqual({
      token: 'refused',
      params: { binding: 'request' },
    })
    await guard.close()
  })

  it('names the upstream dimension a queued call waited for', async () => {
    const guard = createGuard(
      options({ quotas: {}, models: { 'qwen-plus': { rpm: 600, rps: 1 } }, queue: { maxWaitMs: 10_000 } }),
    )
    const client = guard.client({ user: 'u-queued' })
    const [a, b] = await Promise.all([
      client.chat.completions.create(ask).withResponse(),
      client.chat.completions.create(ask).withResponse(),
    ])
    const items = [a, b].map((r) => parseItem(r.response.headers.get(HEADER)!))
    const queued = items.find((i) => Number(i.params['queued-ms']) > 300)
    expect(queued).toBeDefined()
    expect(queued!.params.binding).toMatch(/^upstream-(rpm|tpm|rps|tps)$/)
    expect(Number(queued!.params['queued-ms'])).toBeGreaterThan(300)
    // The other was admitted at once with nothing binding it (no quotas, no wait).
    expect(items.find((i) => i !== queued)).toEqual({
      token: 'admitted',
      params: { 'queued-ms': expect.any(Number), 'call-id': expect.any(String) },
    })
    await guard.close()
  })

  it('is off by default', async () => {
    const guard = createGuard(options({ headers: {} }))
    const client = guard.client({ user: 'u-off' })
    const { response } = await client.chat.completions.create(ask).withResponse()
    expect(response.headers.get(HEADER)).toBeNull()
    await client.chat.completions.create(ask)
    const refused = await client.chat.completions.create(ask).catch((e: unknown) => e)
    expect((refused as { headers: Headers }).headers.get(HEADER)).toBeNull()
    await guard.close()
    expect(() => createGuard(options({ headers: { decision: 'yes' as never } }))).toThrow(/headers\.decision/)
    expect(() => createGuard(options({ headers: { other: true } as never }))).toThrow(/headers/)
  })
})

describe.each(['express', 'koa', 'node'] as Framework[])('decision header through %s', (framework) => {
  it('on the relay (JSON, stream, 429, 400) and on a route refusal translated by the adapter', async () => {
    const tap = new ResponseTap()
    const app = await startApp(framework, options(), tap)
    const client = new OpenAI({
      apiKey: 'client-key',
      baseURL: app.baseURL,
      maxRetries: 0,
      defaultHeaders: { 'x-user': `relay-${framework}` },
    })
    const json = await client.chat.completions.create(ask).withResponse()
    expect(parseItem(json.response.headers.get(HEADER)!)).toMatchObject({
      token: 'admitted',
      params: { binding: 'user-rpm' },
    })
    const stream = await client.chat.completions.create({ ...ask, stream: true }).withResponse()
    for await (const chunk of stream.data) void chunk
    expect(parseItem(stream.response.headers.get(HEADER)!).token).toBe('admitted')
    const refused = await client.chat.completions.create(ask).catch((e: unknown) => e)
    expect((refused as { status: number }).status).toBe(429)
    expect(parseItem((refused as { headers: Headers }).headers.get(HEADER)!)).toEqual({
      token: 'refused',
      params: { binding: 'user-rpm', 'call-id': expect.any(String) },
    })
    const bad = await fetch(`${app.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-user': `relay-${framework}` },
      body: JSON.stringify({ model: 'qwen-plus', messages: 'not a list' }),
    })
    expect(bad.status).toBe(400)
    expect(parseItem(bad.headers.get(HEADER)!)).toEqual({ token: 'refused', params: { binding: 'request' } })

    // The app's own route: req.qwen / ctx.qwen throws, guard.errors (Express) or the middleware (Koa) answers.
    const route = await fetch(`${app.running.url}/ask`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-user': `relay-${framework}` },
      body: JSON.stringify(ask),
    })
    expect(route.status).toBe(429)
    expect(parseItem(route.headers.get(HEADER)!)).toMatchObject({ token: 'refused', params: { binding: 'user-rpm' } })
    tap.assertNoSecrets()
    await app.close()
  })
})
