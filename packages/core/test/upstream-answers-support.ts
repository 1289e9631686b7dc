// Support of the upstream-answers-*.property.test.ts suites (not a test file itself).
/**
 * Property suite (fast-check, seeded): whatever Qwen answers, the guard stays exact and honest.
 * 10,000 generated upstream answers (5,000 JSON, 5,000 streams) through the three caller paths
 * (guard.call, the openai client, the relay): statuses, bodies of every shape (chat completions with
 * hostile usage, compatible and native error bodies, SSE text, garbage, JSON of any shape), streams
 * (chunks, hostile usage chunks, error events in both framings, garbage data, comments, missing or
 * early [DONE], cut mid-event, a body that errors), no answer at all, and garbage `Retry-After` /
 * `retry-after-ms` headers. The upstream is an injected `upstream.fetch` (no sockets: the loopback
 * suites are call-path.test.ts); memory store, rampUp off, tiny deadlines so no case waits long.
 *
 * After every case: the caller got a valid answer (a stream ends with [DONE] or an error event) or a
 * QwenGuardError with a status in {400, 429, 502, 503, 504}; every quota counter and every pace
 * meter is finite and in range, no lease and no upstream slot is left; no secret (the account's key
 * or id) is in any answer, error or log line; no unhandled rejection.
 */
import fc from 'fast-check'
import OpenAI, { APIError } from 'openai'
import { afterAll, beforeAll, vi } from 'vitest'
import { guardedAnswer, guardedCall, type CallDeps } from '../src/call.js'
import { createGuardedClient } from '../src/client/guarded-client.js'
import { hideGuardInternals } from '../src/guard-internals.js'
import { isQwenGuardError } from '../src/errors.js'
import type { Guard } from '../src/guard-types.js'
import { resolveOptions } from '../src/options.js'
import { QuotaAdmission } from '../src/quota/index.js'
import { createRelay } from '../src/relay.js'
import type { GuardEvent, Identity } from '../src/types.js'
import { UpstreamPool } from '../src/upstream/pool.js'

const KEY = 'sk-prop-SECRET-7f3a9c'
const ACCOUNT = 'acct-prop-SECRET-42'
const SECRETS = [KEY, ACCOUNT]
const ALLOWED_STATUS = new Set([400, 429, 502, 503, 504])
/** Cases per property (the two files together: 10,000); PROP_RUNS overrides for a quick local run. */
export const RUNS = Number(process.env.PROP_RUNS ?? 5_000)
export const SEED = 20_261_130

// ---------- generators ----------

const secretText = fc.constantFrom(`key ${KEY}`, `account ${ACCOUNT}`, `Bearer ${KEY} for ${ACCOUNT}`, 'plain words')
const hostileNumber = fc.oneof(
  fc.integer({ min: 0, max: 5_000 }),
  fc.constantFrom(-1, -1e9, 1e9 + 1, 1e12, 1e308, 0.5, 2 ** 53),
  fc.double({ noNaN: false }),
  fc.string({ maxLength: 4 }),
  fc.constantFrom(null, true, [], {}),
)
const usage = fc.oneof(
  fc
    .record({ prompt_tokens: fc.nat(3_000), completion_tokens: fc.nat(3_000) })
    .map((u) => ({ ...u, total_tokens: u.prompt_tokens + u.completion_tokens })),
  fc.record(
    { prompt_tokens: hostileNumber, completion_tokens: hostileNumber, total_tokens: hostileNumber },
    { requiredKeys: [] },
  ),
  fc.constantFrom(undefined, null, 'lots', 42, []),
)
const headerValue = fc.oneof(
  fc.constantFrom(
    '0',
    '1',
    '86400',
    '-1',
    '1e400',
    'NaN',
    '  ',
    'soon',
    '9'.repeat(400),
    'Wed, 21 Oct 2099 07:28:00 GMT',
    'Thu, 01 Jan 1970 00:00:00 GMT',
  ),
  fc.nat(200_000).map(String),
  fc.string({ maxLength: 12 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
)
const headers = fc.record(
  { 'retry-after': headerValue, 'retry-after-ms': headerValue, 'x-upstream-account': fc.constant(ACCOUNT) },
  { requiredKeys: [] },
)
const errorCode = fc.constantFrom(
  'limit_requests',
  'limit_burst_rate',
  'insufficient_quota',
  'Throttling.AllocationQuota',
  'Throttling.RateQuota',
  'Throttling',
  'InternalError',
  'ModelServingError',
  'ServiceUnavailable',
  'data_inspection_failed',
  'invalid_api_key',
  'Arrearage',
  'AllocationQuota.FreeTierOnly',
  'invalid_request_error',
  'whatever',
)
const errorMessage = fc.oneof(
  secretText,
  fc.constantFrom(
    'Requests rate limit exceeded',
    'Free allocated quota exceeded.',
    'The quota will reset at 07-15 00:00:00 UTC',
    'Allocated quota exceeded',
    'Input data may contain inappropriate content.',
    'increased too quickly',
  ),
)
const errorJson = fc.oneof(
  fc.record({ error: fc.record({ code: errorCode, message: errorMessage, type: fc.constant('x') }) }),
  fc.record({ code: errorCode, message: errorMessage, request_id: fc.constant(ACCOUNT) }),
)
const completionBody = fc
  .record({ usage, content: fc.string({ maxLength: 20 }), model: fc.constantFrom('qwen-plus', 'other', undefined) })
  .map(({ usage: u, content, model }) =>
    JSON.stringify({
      id: 'c',
      object: 'chat.completion',
      created: 1,
      model,
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      usage: u,
    }),
  )
const jsonBody = fc.oneof(
  { weight: 5, arbitrary: completionBody },
  { weight: 2, arbitrary: errorJson.map((e) => JSON.stringify(e)) },
  { weight: 1, arbitrary: errorJson.map((e) => `event:error\n:HTTP_STATUS/429\ndata:${JSON.stringify(e)}\n\n`) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.constantFrom(
        '',
        '<html>502 Bad Gateway</html>',
        `{"choices": [], "error": "${KEY}"}`,
        '{"choices": 5}',
        '{"choices": []',
      ),
    ),
  },
)
const status = fc.oneof(
  { weight: 6, arbitrary: fc.constant(200) },
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      201,
      302,
      400,
      401,
      403,
      404,
      408,
      409,
      413,
      418,
      422,
      429,
      451,
      500,
      502,
      503,
      504,
      599,
    ),
  },
)

const chunk = (content: unknown) =>
  JSON.stringify({
    id: 'c',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'qwen-plus',
    choices: [{ index: 0, delta: { content }, finish_reason: null }],
  })
const streamEvent = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 12 }).map((c) => `data: ${chunk(c)}\n\n`) },
  {
    weight: 2,
    arbitrary: usage.map(
      (u) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [], usage: u })}\n\n`,
    ),
  },
  { weight: 1, arbitrary: errorJson.map((e) => `data: ${JSON.stringify(e)}\n\n`) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(errorJson, fc.constantFrom(400, 429, 500))
      .map(([e, s]) => `event:error\n:HTTP_STATUS/${s}\ndata:${JSON.stringify(e)}\n\n`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      ': keep-alive\n\n',
      'data: [DONE]\n\n',
      'data: not json\n\n',
      'data: 42\n\n',
      'data: null\n\n',
      '\n\n',
      'event: ping\n\n',
      `data: ${chunk(5)}\n\n`,
      'data: {"choices": {"a": 1}}\n\n',
    ),
  },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => `data: ${JSON.stringify(v)}\n\n`) },
)
/** How Qwen's stream ends: cleanly, after [DONE], cut mid-event, or with a read error. */
const streamEnd = fc.constantFrom('close', 'done', 'done', 'cut', 'error')

export const jsonCase = fc.record({
  kind: fc.constant('json' as const),
  path: fc.constantFrom('call', 'client', 'relay'),
  answers: fc.array(fc.record({ status, body: jsonBody, headers, noAnswer: fc.nat(39).map((n) => n === 0) }), {
    minLength: 1,
    maxLength: 3,
  }),
  maxAttempts: fc.integer({ min: 1, max: 3 }),
  timeoutMs: fc.constantFrom(10, 25),
})
export const streamCase = fc.record({
  kind: fc.constant('stream' as const),
  path: fc.constantFrom('call', 'client', 'relay'),
  includeUsage: fc.boolean(),
  answers: fc.array(
    fc.record({
      status,
      events: fc.array(streamEvent, { maxLength: 6 }),
      end: streamEnd,
      split: fc.nat(40),
      headers,
      errorBody: jsonBody,
    }),
    { minLength: 1, maxLength: 3 },
  ),
  maxAttempts: fc.integer({ min: 1, max: 3 }),
  timeoutMs: fc.constantFrom(10, 25),
})
type Case =
  | (typeof jsonCase extends fc.Arbitrary<infer T> ? T : never)
  | (typeof streamCase extends fc.Arbitrary<infer T> ? T : never)

// ---------- the stub upstream ----------

function streamBody(parts: string[], end: string, split: number): ReadableStream<Uint8Array> {
  let text = parts.join('')
  if (end === 'done') text += 'data: [DONE]\n\n'
  if (end === 'cut') text += `data: {"choices":[{"delta":{"content":"cu`
  const cutAt = split % (text.length + 1)
  const pieces = [text.slice(0, cutAt), text.slice(cutAt)].filter((p) => p !== '')
  const encoder = new TextEncoder()
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const piece = pieces.shift()
      if (piece !== undefined) return controller.enqueue(encoder.encode(piece))
      if (end === 'error') controller.error(new TypeError(`terminated: socket hang up (${KEY})`))
      else controller.close()
    },
  })
}

/** The upstream fetch of one case: answers in order, the last one repeated. */
function stubFetch(c: Case): typeof fetch {
  let index = 0
  return (async (_url: unknown, init?: RequestInit) => {
    const signal = init?.signal
    if (signal?.aborted) throw signal.reason
    const i = Math.min(index++, c.answers.length - 1)
    if (c.kind === 'json') {
      const answer = c.answers[i]!
      if (answer.noAnswer) {
        return new Promise<Response>((_, reject) =>
          signal?.addEventListener('abort', () => reject(signal.reason), { once: true }),
        )
      }
      return new Response(answer.body, { status: answer.status, headers: answer.headers })
    }
    const answer = c.answers[i]!
    if (answer.status !== 200) return new Response(answer.errorBody, { status: answer.status, headers: answer.headers })
    return new Response(streamBody(answer.events, answer.end, answer.split), {
      status: 200,
      headers: { ...answer.headers, 'content-type': 'text/event-stream' },
    })
  }) as typeof fetch
}

// ---------- running one case ----------

interface Outcome {
  /** Text the caller could see: bodies, error messages, headers. */
  seen: string[]
  status: number
}

/** The fetch of the case running now (options are resolved once per deadline and attempt budget). */
let currentFetch: typeof fetch = () => Promise.reject(new Error('no case'))
const optionsCache = new Map<string, ReturnType<typeof resolveOptions>>()

function optionsFor(c: Case): ReturnType<typeof resolveOptions> {
  const key = `${c.timeoutMs}/${c.maxAttempts}`
  let options = optionsCache.get(key)
  if (!options) {
    options = resolveOptions({
      upstream: {
        accounts: [{ id: ACCOUNT, apiKey: KEY }],
        rampUp: false,
        timeoutMs: c.timeoutMs,
        maxAttempts: c.maxAttempts,
        maxRetryAfterMs: 10,
        fetch: (input, init) => currentFetch(input, init),
      },
      models: { 'qwen-plus': { rpm: 600_000, tpm: 1_000_000_000, fallback: [] } },
      quotas: { user: { tpm: 200_000, rpm: 100_000, concurrency: 2, tokensPerDay: 10_000_000 } },
      queue: { maxWaitMs: 30 },
    })
    optionsCache.set(key, options)
  }
  return options
}

/** A fresh guard (quota counters, pool, lanes) per case, over the case's stub upstream. */
function setup(c: Case) {
  const events: GuardEvent[] = []
  currentFetch = stubFetch(c)
  const options = optionsFor(c)
  const emit = (event: GuardEvent) => events.push(event)
  const quota = new QuotaAdmission({ options, emit })
  const pool = new UpstreamPool({ options, emit })
  const deps: CallDeps = { options, quota, pool, emit }
  const guard = {
    call: (identity: Identity, body: Record<string, unknown>, callOptions?: { signal?: AbortSignal }) =>
      guardedCall(deps, identity, body, callOptions),
    models: () => [],
  } as unknown as Guard
  hideGuardInternals(guard, {
    options,
    answer: (identity, body, callOptions) => guardedAnswer(deps, identity, body, callOptions),
  })
  return { deps, guard, events, quota, pool }
}

const request = (c: Case) => ({
  model: 'qwen-plus',
  messages: [{ role: 'user' as const, content: 'hello' }],
  max_tokens: 50,
  ...(c.kind === 'stream'
    ? { stream: true, ...(c.includeUsage ? { stream_options: { include_usage: true } } : {}) }
    : {}),
})

/** A plain check (vitest's expect costs ~50 µs a call; these run ~40 times per case). */
function ensure(condition: boolean, message: string): void {
  if (!condition) throw new Error(message)
}

/** A stream as the caller reads it must end with [DONE] or one error event. */
function expectEnded(text: string, upstreamSentDone: boolean): void {
  const last = text.trimEnd().split('\n\n').at(-1) ?? ''
  if (last === 'data: [DONE]') {
    ensure(upstreamSentDone, 'the stream ended with [DONE] that Qwen never sent')
    return
  }
  ensure(
    /^data: \{"error":\{/.test(last),
    `the stream ended with neither [DONE] nor an error event: ${last.slice(0, 200)}`,
  )
}

function expectRefusal(error: unknown, seen: string[]): number {
  if (!isQwenGuardError(error)) throw new Error(`not a QwenGuardError: ${String(error)}`)
  ensure(ALLOWED_STATUS.has(error.status), `refusal status ${error.status} (${error.code})`)
  seen.push(error.message, JSON.stringify(error.toHttp()))
  return error.status
}

async function runCase(c: Case, deps: CallDeps, guard: Guard): Promise<Outcome> {
  const identity = { user: 'prop-user' }
  const body = request(c)
  const seen: string[] = []
  const sentDone =
    c.kind === 'stream' &&
    c.answers.some((a) => a.status === 200 && (a.end === 'done' || a.events.some((e) => e.startsWith('data: [DONE]'))))
  if (c.path === 'call') {
    try {
      const { response } = await guardedCall(deps, identity, body)
      const text = await response.text()
      seen.push(text, JSON.stringify([...response.headers]))
      if (c.kind === 'stream') expectEnded(text, sentDone)
      else JSON.parse(text)
      return { seen, status: response.status }
    } catch (error) {
      return { seen, status: expectRefusal(error, seen) }
    }
  }
  if (c.path === 'client') {
    const client = createGuardedClient(
      { options: deps.options, call: (i, b, o) => guardedCall(deps, i, b, o), models: () => [] },
      identity,
    )
    try {
      if (c.kind === 'json') {
        const completion = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming)
        seen.push(JSON.stringify(completion))
        return { seen, status: 200 }
      }
      const stream = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsStreaming)
      try {
        for await (const part of stream) seen.push(JSON.stringify(part))
      } catch (error) {
        // Mid-stream: the SDK's APIError from the guard's error event, never anything else.
        ensure(error instanceof APIError, `mid-stream error that is not an APIError: ${String(error)}`)
        seen.push((error as Error).message)
        return { seen, status: 200 }
      }
      ensure(sentDone, "the SDK stream ended normally without Qwen's [DONE]")
      return { seen, status: 200 }
    } catch (error) {
      return { seen, status: expectRefusal(error, seen) }
    }
  }
  const answer = await createRelay(guard, { onError: (error) => seen.push(`relay onError: ${String(error)}`) })({
    method: 'POST',
    path: '/chat/completions',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    identity,
  })
  const text = typeof answer.body === 'string' ? answer.body : await new Response(answer.body).text()
  seen.push(text, JSON.stringify(answer.headers))
  ensure(
    answer.status === 200 || ALLOWED_STATUS.has(answer.status),
    `relay status ${answer.status}: ${text.slice(0, 200)}`,
  )
  if (answer.status === 200 && c.kind === 'stream') expectEnded(text, sentDone)
  else JSON.parse(text)
  return { seen, status: answer.status }
}

async function checkCounters(quota: QuotaAdmission, pool: UpstreamPool, events: GuardEvent[]): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve)) // a JSON answer's settle is sent without waiting
  for (const state of await quota.state({ user: 'prop-user' })) {
    const { dimension, remaining, limit } = state
    ensure(
      Number.isFinite(remaining) && remaining >= 0 && remaining <= limit,
      `${dimension}: remaining ${remaining} of ${limit}`,
    )
    if (dimension === 'concurrency') ensure(remaining === limit, `a lease was left (${remaining} of ${limit})`)
  }
  const now = Date.now()
  for (const lane of pool.state()) {
    ensure(lane.inFlight === 0, `an upstream slot was left (${lane.inFlight})`)
    ensure(
      Number.isFinite(lane.usedFraction) && lane.usedFraction >= 0,
      `pace meter used fraction ${lane.usedFraction}`,
    )
    ensure(
      Number.isFinite(lane.coolingUntil) && lane.coolingUntil <= now + 61_000,
      `cooling until ${lane.coolingUntil - now} ms from now`,
    )
    ensure(
      Number.isFinite(lane.disabledUntil) && lane.disabledUntil <= now + 31 * 86_400_000 + 1_000,
      `disabled until ${lane.disabledUntil - now} ms from now`,
    )
    ensure(Number.isFinite(lane.pace) && lane.pace > 0 && lane.pace <= 1, `pace ${lane.pace}`)
  }
  let settled = 0
  for (const e of events) {
    if (e.type !== 'settled') continue
    settled++
    ensure(
      Number.isFinite(e.usedTokens) && e.usedTokens >= 0 && e.usedTokens <= 4_000_000,
      `settled ${e.usedTokens} tokens`,
    )
  }
  ensure(settled <= 1, `settled ${settled} times`)
}

// ---------- the property ----------

const unhandled: unknown[] = []
const logged: string[] = []
const onUnhandled = (reason: unknown) => unhandled.push(reason)

/** Call at the top of a property file: watches unhandled rejections and every console line. */
export function watchProcess(): void {
  beforeAll(() => {
    process.on('unhandledRejection', onUnhandled)
    for (const method of ['log', 'info', 'warn', 'error', 'debug'] as const) {
      vi.spyOn(console, method).mockImplementation((...args: unknown[]) => void logged.push(args.map(String).join(' ')))
    }
  })
  afterAll(() => {
    process.off('unhandledRejection', onUnhandled)
    vi.restoreAllMocks()
    if (process.env.PROP_TIMING)
      process.stdout.write(
        `${JSON.stringify([...timing].sort((a, b) => b[1][0] - a[1][0]).map(([k, [t, n]]) => `${k}: ${n} cases ${Math.round(t)} ms`))}\n`,
      )
    process.stdout.write(
      `upstream-answers property: ${counts.cases} cases, ${counts.answered} answered 200, refused by status ${JSON.stringify(Object.fromEntries(counts.refused))}\n`,
    )
  })
}

const timing = new Map<string, [number, number]>()
const counts = { cases: 0, answered: 0, refused: new Map<number, number>() }

/** The property over one kind of case; installs the unhandled-rejection and console watchers. */
export function property(arbitrary: fc.Arbitrary<Case>) {
  return fc.asyncProperty(arbitrary, async (c) => {
    const { deps, guard, events, quota, pool } = setup(c)
    const started = performance.now()
    try {
      const outcome = await runCase(c, deps, guard)
      counts.cases++
      const ms = performance.now() - started
      const key = `${c.kind}/${c.path}/${outcome.status}`
      const [total, n] = timing.get(key) ?? [0, 0]
      timing.set(key, [total + ms, n + 1])
      if (outcome.status === 200) counts.answered++
      else counts.refused.set(outcome.status, (counts.refused.get(outcome.status) ?? 0) + 1)
      await checkCounters(quota, pool, events)
      for (const text of [...outcome.seen, ...logged])
        for (const secret of SECRETS) ensure(!text.includes(secret), `secret in: ${text.slice(0, 300)}`)
      ensure(unhandled.length === 0, `unhandled rejection: ${String(unhandled[0])}`)
    } finally {
      logged.length = 0
      await Promise.all([pool.close(), quota.close()])
    }
  })
}
