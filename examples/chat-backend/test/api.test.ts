/**
 * The example's HTTP API, without a browser: the demo cookie is the identity, /api/quota reports
 * the guard's state, /api/chat streams or refuses with an exact Retry-After, and /v1 relays.
 */
import OpenAI from 'openai'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { COOKIE_NAME } from '../src/session.js'
import type { QuotaBody } from '../src/quota-route.js'
import type { UsageBody } from '../src/usage-route.js'
import { startApp, type RunningApp } from './start-app.js'

let running: RunningApp

beforeAll(async () => {
  running = await startApp({
    simulator: { ttftMs: 0, perTokenMs: 0 },
    // Two requests a minute: the third is refused with a wait of up to a minute, and nothing sleeps.
    app: { quotas: { browser: { rpm: 2, tpm: 10_000, concurrency: 2 } } },
  })
})
afterAll(async () => {
  await running?.close()
})

/** A fresh browser: GET the page, keep the cookie it was given. */
async function newBrowser(): Promise<string> {
  const res = await request(running.url).get('/').expect(200)
  const cookie = cookieFrom(res.headers['set-cookie'])
  expect(cookie).toBeDefined()
  return cookie!
}

function cookieFrom(header: string | string[] | undefined): string | undefined {
  const list = Array.isArray(header) ? header : header ? [header] : []
  return list.find((c) => c.startsWith(`${COOKIE_NAME}=`))?.split(';')[0]
}

/** Collects an SSE body as text (supertest does not buffer event streams by itself). */
function collectText(res: request.Response, callback: (error: Error | null, body: string) => void): void {
  // At parse time supertest hands over the raw Node response stream, typed as its Response.
  const stream = res as unknown as NodeJS.ReadableStream
  let text = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => (text += chunk))
  stream.on('end', () => callback(null, text))
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each event of the example's stream has its own payload; the tests read them as JSON
function sseEvents(text: string): Array<{ event: string; data: any }> {
  return text
    .split('\n\n')
    .filter((block) => block.trim())
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message'
      const data = /^data: (.*)$/m.exec(block)?.[1]
      return { event, data: data ? JSON.parse(data) : null }
    })
}

const ask = (cookie: string, content = 'hello there') =>
  request(running.url)
    .post('/api/chat')
    .set('cookie', cookie)
    .send({ messages: [{ role: 'user', content }] })
    .buffer(true)
    .parse(collectText)

describe('demo identity', () => {
  it('gives each browser an httpOnly random-id cookie and keeps it', async () => {
    const res = await request(running.url).get('/api/quota').expect(200)
    const setCookie = String(res.headers['set-cookie'])
    expect(setCookie).toMatch(new RegExp(`^${COOKIE_NAME}=[A-Za-z0-9_-]{22};`))
    expect(setCookie).toMatch(/HttpOnly/i)
    expect(setCookie).toMatch(/SameSite=Lax/i)

    const cookie = cookieFrom(res.headers['set-cookie'])!
    const again = await request(running.url).get('/api/quota').set('cookie', cookie).expect(200)
    expect(again.headers['set-cookie']).toBeUndefined()
    expect(again.body.user).toBe(res.body.user)
  })

  it('replaces a hand-made cookie instead of using it as an identity', async () => {
    const res = await request(running.url).get('/api/quota').set('cookie', `${COOKIE_NAME}=admin`).expect(200)
    expect(cookieFrom(res.headers['set-cookie'])).toMatch(new RegExp(`^${COOKIE_NAME}=[A-Za-z0-9_-]{22}$`))
  })
})

describe('/api/quota', () => {
  it('reports the per-browser limits from guard.state()', async () => {
    const cookie = await newBrowser()
    const res = await request(running.url).get('/api/quota').set('cookie', cookie).expect(200)
    const body = res.body as QuotaBody
    expect(body.backend).toBe('simulator')
    expect(body.user).toMatch(/^[A-Za-z0-9_-]{6}$/)
    expect(body.model).toEqual({ requested: 'qwen3-max', fallback: ['qwen-plus', 'qwen-flash'] })
    const byDimension = Object.fromEntries(body.limits.map((l) => [l.dimension, l]))
    expect(byDimension.rpm).toMatchObject({ limit: 2, remaining: 2, windowSeconds: 60 })
    expect(byDimension.tpm).toMatchObject({ limit: 10_000, remaining: 10_000 })
    expect(byDimension.concurrency).toMatchObject({ limit: 2 })
    for (const limit of body.limits) expect(limit.resetMs).toBeGreaterThanOrEqual(0)
  })
})

describe('/api/chat', () => {
  it('streams meta, deltas and done, and spends the browser quota', async () => {
    const cookie = await newBrowser()
    const res = await ask(cookie).expect(200)
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/)
    const events = sseEvents(res.body as string)
    expect(events[0]).toMatchObject({ event: 'meta', data: { requestedModel: 'qwen3-max' } })
    expect(typeof events[0]!.data.model).toBe('string')
    const deltas = events.filter((e) => e.event === 'delta')
    expect(deltas.length).toBeGreaterThan(5)
    const done = events.at(-1)!
    expect(done.event).toBe('done')
    expect(done.data.usage.completion).toBeGreaterThan(0)

    const quota = await request(running.url).get('/api/quota').set('cookie', cookie).expect(200)
    const rpm = (quota.body as QuotaBody).limits.find((l) => l.dimension === 'rpm')!
    expect(rpm.remaining).toBe(1)
    expect(rpm.resetMs).toBeGreaterThan(0)
  })

  it('reports upstream usage for the chart: requests and tokens per minute against the limits, accounts by number only', async () => {
    const cookie = await newBrowser()
    const done = sseEvents((await ask(cookie, 'count me in the usage report').expect(200)).body as string).at(-1)!
    expect(done.event).toBe('done')
    const res = await request(running.url).get('/api/usage').set('cookie', cookie).expect(200)
    expect(res.headers['cache-control']).toBe('no-store')
    const body = res.body as UsageBody
    expect(body.to - body.from).toBe(30 * 60_000)
    const requests = body.lanes.reduce((n, lane) => n + lane.minutes.reduce((m, minute) => m + minute.requests, 0), 0)
    expect(requests).toBeGreaterThanOrEqual(1)
    for (const lane of body.lanes) {
      expect(lane.account).toMatch(/^account \d+$/)
      expect(lane.limits.rpm).toBeGreaterThan(0)
      expect(lane.peakRequestsPerMinute).toBeLessThanOrEqual(lane.limits.rpm)
    }
    expect(JSON.stringify(body)).not.toMatch(/sk-/) // no key, whatever the account ids are
  })

  it('refuses the browser past its quota with 429, Retry-After and retry-after-ms; another browser is unaffected', async () => {
    const cookie = await newBrowser()
    await ask(cookie, 'one').expect(200)
    await ask(cookie, 'two').expect(200)
    const refused = await request(running.url)
      .post('/api/chat')
      .set('cookie', cookie)
      .send({ messages: [{ role: 'user', content: 'three' }] })
      .expect(429)
    const retryAfter = Number(refused.headers['retry-after'])
    const retryAfterMs = Number(refused.headers['retry-after-ms'])
    expect(retryAfterMs).toBeGreaterThan(0)
    expect(retryAfterMs).toBeLessThanOrEqual(60_000)
    expect(retryAfter).toBe(Math.max(1, Math.ceil(retryAfterMs / 1000)))
    expect(refused.body.error).toMatchObject({ type: 'rate_limit_error' })
    expect(typeof refused.body.error.code).toBe('string')

    const other = await newBrowser()
    await ask(other, 'hi').expect(200)
  })

  it('answers 400 to a malformed chat body without calling Qwen', async () => {
    const cookie = await newBrowser()
    const before = running.simulator.stats().calls
    const res = await request(running.url)
      .post('/api/chat')
      .set('cookie', cookie)
      .send({ messages: [{ role: 'system', content: 'x' }] })
      .expect(400)
    expect(res.body.error.param).toBe('messages[0].role')
    await request(running.url)
      .post('/api/chat')
      .set('cookie', cookie)
      .set('content-type', 'application/json')
      .send('{not json')
      .expect(400)
    expect(running.simulator.stats().calls).toBe(before)
  })
})

describe('/v1 relay', () => {
  it('lists models and answers an OpenAI-style completion without minting a cookie', async () => {
    const models = await request(running.url).get('/v1/models').expect(200)
    expect(models.body.object).toBe('list')
    expect(models.body.data.map((m: { id: string }) => m.id)).toContain('qwen3-max')

    const res = await request(running.url)
      .post('/v1/chat/completions')
      .send({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 })
      .expect(200)
    expect(res.body.object).toBe('chat.completion')
    expect(res.headers['set-cookie']).toBeUndefined()
    expect(res.headers['x-qwen-guard-model']).toBe('qwen-plus')
  })

  it('serves the README snippet: the openai SDK streaming through /v1', async () => {
    const client = new OpenAI({ baseURL: `${running.url}/v1`, apiKey: 'anything' })
    const stream = await client.chat.completions.create({
      model: 'qwen3-max',
      messages: [{ role: 'user', content: 'Hello' }],
      max_tokens: 12,
      stream: true,
    })
    let text = ''
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
    expect(text.split(' ').length).toBeGreaterThan(3)
  })
})

describe('/api/quota while an answer streams', () => {
  let slow: RunningApp
  beforeAll(async () => {
    // Slow enough (20 ms a token) that the quota can be read between the first event and the last.
    slow = await startApp({
      simulator: { ttftMs: 20, perTokenMs: 20 },
      app: { quotas: { browser: { rpm: 10, tpm: 10_000, concurrency: 2 } } },
    })
  })
  afterAll(async () => {
    await slow?.close()
  })

  it('reports the streaming call, the lease it holds and the tokens reserved for it, then settles', async () => {
    const page = await request(slow.url).get('/').expect(200)
    const cookie = cookieFrom(page.headers['set-cookie'])!
    const quota = async () =>
      (await request(slow.url).get('/api/quota').set('cookie', cookie).expect(200)).body as QuotaBody
    const remaining = (body: QuotaBody, dimension: string) =>
      body.limits.find((l) => l.dimension === dimension)?.remaining

    expect((await quota()).live).toEqual({ waiting: 0, streaming: 0, reservedTokens: 0 })
    const response = await fetch(`${slow.url}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'tell me a long story' }] }),
    })
    expect(response.status).toBe(200)
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
    let text = ''
    while (!text.includes('event: delta')) {
      const { value, done } = await reader.read()
      if (done) break
      text += value
    }

    const during = await quota()
    expect(during.live.streaming).toBe(1)
    expect(during.live.waiting).toBe(0)
    expect(during.live.reservedTokens).toBeGreaterThan(0)
    expect(remaining(during, 'concurrency')).toBe(1)
    // The tokens window is charged the reservation up front.
    expect(remaining(during, 'tpm')).toBe(10_000 - during.live.reservedTokens)

    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      text += value
    }
    expect(text).toContain('event: done')
    const after = await quota()
    expect(after.live).toEqual({ waiting: 0, streaming: 0, reservedTokens: 0 })
    expect(remaining(after, 'concurrency')).toBe(2)
    // Settled to what the answer really used.
    const done = sseEvents(text).find((e) => e.event === 'done')!
    expect(remaining(after, 'tpm')).toBe(10_000 - done.data.usage.total)
  })
})

describe('an upstream key Qwen refuses', () => {
  it('answers 503 with the wait, and warns the operator once, naming neither the key nor the account', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const wrong = await startApp({ simulator: { ttftMs: 0, perTokenMs: 0 }, apiKey: 'sk-wrong-key-123456' })
    try {
      const chat = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] }
      for (let i = 0; i < 2; i++) {
        const res = await request(wrong.url).post('/v1/chat/completions').send(chat).expect(503)
        expect(Number(res.headers['retry-after'])).toBeGreaterThan(3_500)
      }
      expect(warn).toHaveBeenCalledTimes(1)
      const line = String(warn.mock.calls[0]?.[0])
      expect(line).toMatch(/Qwen refused an upstream account \(invalid_key\); it is out of service for about 60 min/)
      expect(line).not.toMatch(/sk-wrong|default/)
    } finally {
      warn.mockRestore()
      await wrong.close()
    }
  })
})
