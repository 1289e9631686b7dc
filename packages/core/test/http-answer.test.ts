import { describe, expect, it } from 'vitest'
import { QwenGuardError } from '../src/errors.js'
import {
  formatOpenAiDuration,
  internalErrorAnswer,
  openAiRateLimitHeaders,
  rateLimitHeaders,
  refusalAnswer,
  PreparedJsonResponse,
  PreparedStreamResponse,
  retryAfterHeaders,
  successHeaders,
} from '../src/http-answer.js'
import type { QuotaState } from '../src/types.js'

// ---- a tiny strict parser for Structured Field Lists (RFC 9651), enough for RateLimit fields ----
type Bare = number | string | boolean | { token: string }
interface SfItem {
  value: Bare
  params: Record<string, Bare>
}

function parseSfList(input: string): SfItem[] {
  let i = 0
  const s = input
  const fail = (why: string): never => {
    throw new Error(`not a Structured Field list at ${i}: ${why} in ${JSON.stringify(s)}`)
  }
  const bare = (): Bare => {
    const c = s[i]
    if (c === '"') {
      let out = ''
      i++
      for (;;) {
        const ch = s[i++]
        if (ch === undefined) fail('unterminated string')
        if (ch === '\\') {
          const e = s[i++]
          if (e !== '"' && e !== '\\') fail('bad escape')
          out += e
          continue
        }
        if (ch === '"') return out
        const code = ch!.charCodeAt(0)
        if (code < 0x20 || code > 0x7e) fail('non-printable in string')
        out += ch
      }
    }
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) {
      const m = /^-?\d{1,15}(\.\d{1,3})?/.exec(s.slice(i)) ?? fail('bad number')
      i += m[0].length
      return Number(m[0])
    }
    if (c === '?') {
      const b = s[i + 1]
      if (b !== '0' && b !== '1') fail('bad boolean')
      i += 2
      return b === '1'
    }
    const m = /^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*/.exec(s.slice(i)) ?? fail('bad item')
    i += m[0].length
    return { token: m[0] }
  }
  const params = (): Record<string, Bare> => {
    const out: Record<string, Bare> = {}
    while (s[i] === ';') {
      i++
      while (s[i] === ' ') i++
      const m = /^[a-z*][a-z0-9_\-.*]*/.exec(s.slice(i)) ?? fail('bad key')
      i += m[0].length
      if (s[i] === '=') {
        i++
        out[m[0]] = bare()
      } else out[m[0]] = true
    }
    return out
  }
  const items: SfItem[] = []
  if (s.length === 0) fail('empty')
  for (;;) {
    const value = bare()
    items.push({ value, params: params() })
    while (s[i] === ' ' || s[i] === '\t') i++
    if (i === s.length) return items
    if (s[i] !== ',') fail('expected a comma')
    i++
    while (s[i] === ' ' || s[i] === '\t') i++
    if (i === s.length) fail('trailing comma')
  }
}

const states: QuotaState[] = [
  { scope: 'user', dimension: 'rpm', limit: 20, remaining: 3, resetMs: 41_200, windowSeconds: 60 },
  { scope: 'user', dimension: 'rps', limit: 2, remaining: 1, resetMs: 300, windowSeconds: 1 },
  { scope: 'user', dimension: 'tpm', limit: 40_000, remaining: 1_234.6, resetMs: 41_200, windowSeconds: 60 },
  {
    scope: 'key',
    dimension: 'tokensPerDay',
    limit: 500_000,
    remaining: 499_000,
    resetMs: 3_600_000,
    windowSeconds: 86_400,
  },
  { scope: 'user', dimension: 'usdPerDay', limit: 1, remaining: 0.37, resetMs: 3_600_000, windowSeconds: 86_400 },
  { scope: 'user', dimension: 'concurrency', limit: 2, remaining: 0, resetMs: 0, windowSeconds: 0 }, // as guard.state() gives it
]

describe('rateLimitHeaders', () => {
  it('produces Structured Field lists with the draft parameters', () => {
    const h = rateLimitHeaders(states)
    const policy = parseSfList(h['ratelimit-policy']!)
    const current = parseSfList(h.ratelimit!)
    expect(policy.map((p) => p.value)).toEqual([
      'user-rpm',
      'user-rps',
      'user-tpm',
      'key-tokens-per-day',
      'user-concurrency',
    ])
    expect(current.map((p) => p.value)).toEqual(policy.map((p) => p.value))
    expect(policy[0]!.params).toEqual({ q: 20, qu: 'requests', w: 60 })
    expect(policy[2]!.params).toEqual({ q: 40_000, qu: 'tokens', w: 60 })
    // A concurrency limit has no window: no `w` (the draft's parameter is optional).
    expect(policy[4]!.params).toEqual({ q: 2, qu: 'concurrent-requests' })
    for (const p of policy.slice(0, 4)) {
      expect(Number.isInteger(p.params.q)).toBe(true)
      expect(Number.isInteger(p.params.w)).toBe(true)
    }
    expect(current[0]!.params).toEqual({ r: 3, t: 42 })
    expect(current[1]!.params).toEqual({ r: 1, t: 1 })
    // remaining rounds down (never promise room that is not there), reset rounds up
    expect(current[2]!.params).toEqual({ r: 1234, t: 42 })
    expect(current[4]!.params).toEqual({ r: 0 }) // no reset time for a concurrency limit
    for (const c of current.slice(0, 4)) expect(Number.isInteger(c.params.r) && Number.isInteger(c.params.t)).toBe(true)
  })

  it('leaves out dollars (not an integer quota) and gives nothing for no states', () => {
    expect(rateLimitHeaders(states)['ratelimit-policy']).not.toContain('usd')
    expect(rateLimitHeaders([])).toEqual({})
    expect(rateLimitHeaders([states[4]!])).toEqual({})
  })

  it('never shows a negative remaining', () => {
    const h = rateLimitHeaders([{ ...states[0]!, remaining: -4 }])
    expect(parseSfList(h.ratelimit!)[0]!.params.r).toBe(0)
  })

  it('the test parser itself rejects malformed lists', () => {
    expect(() => parseSfList('user-rpm;q=1')).not.toThrow() // a token is a valid item
    expect(() => parseSfList('"a";q=1,')).toThrow()
    expect(() => parseSfList('"a";Q=1')).toThrow()
    expect(() => parseSfList('"a";q=1.5555')).toThrow()
    expect(() => parseSfList('"a" "b"')).toThrow()
  })
})

describe('retry headers', () => {
  it('Retry-After is ceil(retry-after-ms / 1000) and at least 1', () => {
    for (const ms of [0, 1, 999, 1000, 1001, 59_999, 120_000]) {
      const h = retryAfterHeaders(ms)
      const after = Number(h['retry-after'])
      expect(Number.isInteger(after)).toBe(true)
      expect(after).toBeGreaterThanOrEqual(1)
      expect(after).toBe(Math.ceil(Number(h['retry-after-ms']) / 1000))
      expect(Number(h['retry-after-ms'])).toBeGreaterThanOrEqual(ms)
    }
    expect(retryAfterHeaders(1001)).toEqual({ 'retry-after': '2', 'retry-after-ms': '1001' })
  })
})

describe('refusalAnswer', () => {
  it('answers a retryable 429 with waits, RateLimit fields and no x-should-retry', () => {
    const err = new QwenGuardError({
      status: 429,
      code: 'rate_limit_exceeded',
      message: 'Rate limit reached for user requests per minute.',
      scope: 'user',
      dimension: 'rpm',
      retryAfterMs: 41_200,
      limits: states.slice(0, 1),
    })
    const a = refusalAnswer(err)
    expect(a.status).toBe(429)
    expect(a.headers['retry-after']).toBe('42')
    expect(a.headers['retry-after-ms']).toBe('41200')
    expect(a.headers['x-should-retry']).toBeUndefined()
    expect(parseSfList(a.headers['ratelimit-policy']!)).toHaveLength(1)
    expect(a.body).toEqual({
      error: {
        message: 'Rate limit reached for user requests per minute.',
        type: 'rate_limit_error',
        code: 'rate_limit_exceeded',
        param: null,
      },
    })
  })

  it('gives a retryable refusal without a computed wait at least 1 s', () => {
    const a = new QwenGuardError({
      status: 503,
      code: 'upstream_unavailable',
      message: 'm',
      scope: 'upstream',
    }).toHttp()
    expect(a.headers['retry-after']).toBe('1')
    expect(a.headers['retry-after-ms']).toBe('1')
  })

  it('marks non-retryable refusals and still says when a daily quota resets', () => {
    const quota = new QwenGuardError({
      status: 429,
      code: 'quota_exceeded',
      message: 'm',
      scope: 'user',
      dimension: 'tokensPerDay',
      retryAfterMs: 7_200_000,
    }).toHttp()
    expect(quota.headers['x-should-retry']).toBe('false')
    expect(quota.headers['retry-after']).toBe('7200')
    const bad = new QwenGuardError({ status: 400, code: 'content_filter', message: 'm', scope: 'upstream' }).toHttp()
    expect(bad.headers).toEqual({ 'x-should-retry': 'false' })
  })
})

describe('OpenAI x-ratelimit headers', () => {
  it('formats durations like OpenAI', () => {
    expect(formatOpenAiDuration(0)).toBe('0ms')
    expect(formatOpenAiDuration(17)).toBe('17ms')
    expect(formatOpenAiDuration(1000)).toBe('1s')
    expect(formatOpenAiDuration(1500)).toBe('1.5s')
    expect(formatOpenAiDuration(360_000)).toBe('6m0s')
    expect(formatOpenAiDuration(3_723_000)).toBe('1h2m3s')
  })

  it('picks the most constraining request and token dimensions', () => {
    const h = openAiRateLimitHeaders(states)
    expect(h).toEqual({
      'x-ratelimit-limit-requests': '2',
      'x-ratelimit-remaining-requests': '1',
      'x-ratelimit-reset-requests': '300ms',
      'x-ratelimit-limit-tokens': '40000',
      'x-ratelimit-remaining-tokens': '1234',
      'x-ratelimit-reset-tokens': '41.2s',
    })
  })

  it('gives nothing for dimensions that are not limited', () => {
    expect(openAiRateLimitHeaders([])).toEqual({})
    expect(Object.keys(openAiRateLimitHeaders(states.slice(0, 1)))).toEqual([
      'x-ratelimit-limit-requests',
      'x-ratelimit-remaining-requests',
      'x-ratelimit-reset-requests',
    ])
  })
})

describe('successHeaders', () => {
  it('names the model and marks a fallback', () => {
    const h = successHeaders({
      model: 'qwen-plus',
      requestedModel: 'qwen3-max',
      quota: states,
      queuedMs: 0,
      attempts: 1,
      callId: 'c-1',
    })
    expect(h['x-qwen-guard-model']).toBe('qwen-plus')
    expect(h['x-qwen-guard-fallback']).toBe('qwen3-max')
    expect(h['x-ratelimit-remaining-requests']).toBe('1')
    expect(parseSfList(h.ratelimit!).length).toBe(5)
  })

  it('has no fallback header when the requested model answered', () => {
    const h = successHeaders({
      model: 'qwen3-max',
      requestedModel: 'qwen3-max',
      quota: [],
      queuedMs: 412.6,
      attempts: 1,
      callId: 'c-2',
    })
    expect(h).toEqual({ 'x-qwen-guard-model': 'qwen3-max', 'x-qwen-guard-queued-ms': '413' })
  })
  it('is exactly the OpenAI triples and the RateLimit fields of the same states, in that order', () => {
    const info = { model: 'qwen-plus', requestedModel: 'qwen-plus', queuedMs: 3, attempts: 1, callId: 'c-3' }
    for (const quota of [states, states.slice(0, 1), states.slice(2), [...states].reverse(), []]) {
      const expected = {
        ...openAiRateLimitHeaders(quota),
        ...rateLimitHeaders(quota),
        'x-qwen-guard-model': 'qwen-plus',
        'x-qwen-guard-queued-ms': '3',
      }
      const h = successHeaders({ ...info, quota })
      expect(h).toEqual(expected)
      expect(Object.keys(h)).toEqual(Object.keys(expected))
    }
  })
})

describe('PreparedJsonResponse', () => {
  const value = { id: 'c1', model: 'qwen-plus', choices: [] }
  const text = JSON.stringify(value)
  const make = () =>
    new PreparedJsonResponse(text, value, { status: 200, headers: { 'content-type': 'application/json', 'x-a': '1' } })

  it('is a Response with its status and headers', () => {
    const r = make()
    expect(r).toBeInstanceOf(Response)
    expect(r.ok).toBe(true)
    expect(r.status).toBe(200)
    expect(r.headers.get('x-a')).toBe('1')
  })

  it('hands out the parsed value or the text once, like any body', async () => {
    const r = make()
    expect(r.bodyUsed).toBe(false)
    expect(await r.json()).toBe(value)
    expect(r.bodyUsed).toBe(true)
    await expect(r.text()).rejects.toThrow(TypeError)
    await expect(r.json()).rejects.toThrow(TypeError)
    const t = make()
    expect(await t.text()).toBe(text)
    await expect(t.arrayBuffer()).rejects.toThrow(TypeError)
    expect(() => t.clone()).toThrow(TypeError)
  })

  it('has a real byte body when asked for one', async () => {
    expect(await new Response(make().body).text()).toBe(text)
    expect(new TextDecoder().decode(await make().arrayBuffer())).toBe(text)
    expect(await (await make().blob()).text()).toBe(text)
    const r = make()
    const body = r.body
    expect(body).not.toBeNull()
    expect(await r.json()).toEqual(value)
    expect(r.bodyUsed).toBe(true)
  })

  it('clones into an independent response', async () => {
    const r = make()
    const c = r.clone()
    expect(await c.json()).toEqual(value)
    expect(c.headers.get('x-a')).toBe('1')
    expect(await r.text()).toBe(text)
  })
})

describe('PreparedStreamResponse', () => {
  const headers = { 'content-type': 'text/event-stream; charset=utf-8', 'x-qwen-guard-model': 'qwen-plus' }
  const sse = 'data: {"id":"c"}\n\ndata: [DONE]\n\n'
  const make = () => new PreparedStreamResponse(new Response(sse).body!, headers)

  it('streams its body with the prepared headers and the content type inside', async () => {
    const r = make()
    expect(r).toBeInstanceOf(Response)
    expect(r.status).toBe(200)
    expect(r.headers.get('x-qwen-guard-model')).toBe('qwen-plus')
    expect((await r.blob()).type).toBe((await new Response('', { headers }).blob()).type)
  })

  it('clones into two readable streams with the same headers', async () => {
    const r = make()
    const c = r.clone()
    expect(c.headers.get('x-qwen-guard-model')).toBe('qwen-plus')
    expect(await c.text()).toBe(sse)
    expect(await r.text()).toBe(sse)
    expect(() => r.clone()).toThrow(TypeError)
  })
})

describe('internalErrorAnswer', () => {
  it('is a generic 500 with nothing from the error', () => {
    const a = internalErrorAnswer()
    expect(a.status).toBe(500)
    expect(a.body.error.type).toBe('server_error')
    expect(JSON.stringify(a)).not.toMatch(/at .*\.ts|stack/i)
  })
})
