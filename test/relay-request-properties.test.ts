/**
 * Property suite (issue 10): 10,000 seeded relay request bodies through the real relay and guard
 * (core createRelay, memory store) with an upstream fetch that records what was sent and bills,
 * as Qwen could, the most the sent body allows. Bodies mix wrong types, deep nesting, huge
 * numbers, unicode (lone surrogates, RTL, emoji), prototype keys, multimodal parts, tools,
 * conflicting max fields, thinking fields and n, as JSON text, bytes or an already parsed object.
 *
 * Properties, for every body:
 * - the answer is 200 (admitted) or 400/404/413 (refused): never 5xx, never an unexpected error;
 * - a refusal has an OpenAI-shaped body, a `param` naming the field for invalid_request, sends
 *   nothing upstream and leaves the caller's counters as they were;
 * - an admitted call sent exactly one request upstream, and its reservation covers the most that
 *   request can be billed under its own caps (max of max_tokens / max_completion_tokens, else the
 *   model's own cap; plus thinking_budget, else the model's longest reasoning, when it thinks; times n);
 * - no unhandled rejection.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createGuard,
  createRelay,
  type Guard,
  type GuardOptions,
  type QuotaState,
  type Relay,
} from '../packages/core/src/index.js'
import { guardOptionsOf } from '../packages/core/src/guard-internals.js'

const RUNS = Number(process.env.PROPERTY_RUNS ?? 10_000)
const SEED = Number(process.env.PROPERTY_SEED ?? 20_261_130)
const SECRET = 'sk-property-secret-51c0'
const MAX_BODY_BYTES = 64 * 1024

const huge = { rpm: 1_000_000_000, tpm: 1_000_000_000_000 }
const models: GuardOptions['models'] = {
  'qwen-plus': huge,
  'qwen3-max': huge,
  'qwen-max': huge,
  'qwen-turbo': huge,
  'qwen-open': { ...huge, thinking: 'on', maxReasoningTokens: 38_912, maxOutputTokens: 16_384 },
  'qwen-thinker': { ...huge, thinking: 'always', maxReasoningTokens: 32_768, maxOutputTokens: 8_192 },
}

// ---------- arbitraries ----------

const oddStrings = [
  '\ud800',
  'a\udfffb',
  '\udc00\ud800',
  '\u202eevil\u202c',
  'مرحبا بالعالم',
  'שלום',
  '👩‍👩‍👧‍👦🚀',
  '你好，世界',
  '',
  ' ',
  '\u0000',
  'x'.repeat(300),
]
const text = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 2, arbitrary: fc.constantFrom(...oddStrings) },
)
const protoKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf')
const hugeNumber = fc.constantFrom(1e308, -1e308, 2 ** 53 + 2, -0, 5e-324, 1.5, -1, 0, 1e21, Number.MAX_SAFE_INTEGER)

/** Nested arrays and objects, `depth` deep, built without recursion. */
const deep = fc.record({ depth: fc.integer({ min: 1, max: 300 }), objects: fc.boolean() }).map(({ depth, objects }) => {
  let value: unknown = 1
  for (let i = 0; i < depth; i++) value = objects ? { a: value } : [value]
  return value
})
/** An object with prototype-ish own keys (Object.fromEntries defines them, as JSON.parse does). */
const protoObject = fc
  .array(fc.tuple(protoKey, fc.jsonValue({ maxDepth: 2 })), { minLength: 1, maxLength: 3 })
  .map((entries) => Object.fromEntries(entries))
const wrong: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  hugeNumber,
  text,
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 3 }),
  protoObject,
)
const maybe = <T>(arbitrary: fc.Arbitrary<T>, freq = 3) => fc.option(arbitrary, { nil: undefined, freq })

const part = fc.oneof(
  { weight: 20, arbitrary: fc.record({ type: fc.constant('text'), text }) },
  {
    weight: 2,
    arbitrary: fc.record({
      type: fc.constant('image_url'),
      image_url: fc.oneof(
        { weight: 6, arbitrary: fc.record({ url: fc.constant('https://x.test/a.png') }) },
        { weight: 1, arbitrary: wrong },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant('video'),
      video: fc.oneof(
        { weight: 6, arbitrary: fc.array(fc.constant('https://x.test/f.png'), { maxLength: 6 }) },
        { weight: 1, arbitrary: wrong },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant('video_url'),
      video_url: fc.record({ url: fc.constant('https://x.test/v.mp4') }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant('input_audio'),
      input_audio: fc.record({ data: fc.base64String({ maxLength: 24 }), format: fc.constant('wav') }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.oneof(fc.constantFrom('refusal', 'hologram', 'file'), wrong),
      refusal: maybe(text),
      text: maybe(wrong),
    }),
  },
  { weight: 1, arbitrary: wrong },
)
const toolCall = fc.record({
  id: fc.constant('call_1'),
  type: fc.constant('function'),
  function: fc.record({ name: fc.constant('f'), arguments: text }),
})
const role = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom('user', 'user', 'user', 'system', 'assistant', 'developer') },
  { weight: 1, arbitrary: fc.constantFrom('tool', 'function') },
  { weight: 1, arbitrary: wrong },
)
const messageExtra = fc.oneof(
  fc.record({ name: fc.oneof({ weight: 4, arbitrary: text }, { weight: 1, arbitrary: wrong }) }),
  fc.record({
    tool_call_id: fc.oneof({ weight: 4, arbitrary: fc.constant('call_1') }, { weight: 1, arbitrary: wrong }),
  }),
  fc.record({
    tool_calls: fc.oneof(
      { weight: 4, arbitrary: fc.array(toolCall, { maxLength: 2 }) },
      { weight: 1, arbitrary: wrong },
    ),
  }),
)
const message = fc
  .record({
    role,
    content: fc.oneof(
      { weight: 16, arbitrary: text },
      { weight: 6, arbitrary: fc.array(part, { maxLength: 4 }) },
      { weight: 1, arbitrary: wrong },
    ),
    extra: fc.option(messageExtra, { nil: undefined, freq: 3 }),
  })
  .map(({ role, content, extra }) => ({ role, content, ...extra }))
const schema = fc.oneof(
  fc.constant({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
  fc.jsonValue({ maxDepth: 4 }),
  deep.map((value) => ({ type: 'object', properties: { nested: value } })),
  protoObject,
)
const tool = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      type: fc.constant('function'),
      function: fc.record(
        { name: fc.oneof(fc.constant('weather'), wrong), description: text, parameters: schema },
        { requiredKeys: ['name'] },
      ),
    }),
  },
  { weight: 1, arbitrary: wrong },
)
const cap = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 70_000 }) },
  { weight: 1, arbitrary: hugeNumber },
  { weight: 1, arbitrary: wrong },
)

const fields = fc.record(
  {
    model: fc.oneof(
      {
        weight: 30,
        arbitrary: fc.constantFrom('qwen-plus', 'qwen3-max', 'qwen-max', 'qwen-turbo', 'qwen-open', 'qwen-thinker'),
      },
      { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'gpt-4o', 'qwen-flash') },
      { weight: 1, arbitrary: wrong },
    ),
    messages: fc.oneof(
      { weight: 30, arbitrary: fc.array(message, { minLength: 1, maxLength: 3 }) },
      { weight: 1, arbitrary: wrong },
    ),
    max_tokens: cap,
    max_completion_tokens: cap,
    enable_thinking: fc.oneof({ weight: 4, arbitrary: fc.boolean() }, { weight: 1, arbitrary: wrong }),
    thinking_budget: fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: 1, max: 90_000 }) },
      { weight: 1, arbitrary: wrong },
    ),
    n: fc.oneof(fc.constantFrom(1, 2, 0, 1.5, '1'), wrong),
    enable_search: fc.oneof(fc.boolean(), wrong),
    stream: fc.oneof({ weight: 4, arbitrary: fc.boolean() }, { weight: 1, arbitrary: wrong }),
    stream_options: fc.oneof(fc.record({ include_usage: fc.oneof(fc.boolean(), wrong) }), wrong),
    temperature: fc.oneof(fc.double({ min: 0, max: 2, noNaN: true }), hugeNumber, wrong),
    tools: fc.oneof({ weight: 4, arbitrary: fc.array(tool, { maxLength: 3 }) }, { weight: 1, arbitrary: wrong }),
    functions: fc.oneof(fc.array(fc.record({ name: fc.constant('f'), parameters: schema }), { maxLength: 2 }), wrong),
    tool_choice: fc.oneof(
      fc.constantFrom('auto', 'none'),
      fc.record({ type: fc.constant('function'), function: fc.record({ name: fc.constant('f') }) }),
      wrong,
    ),
    response_format: fc.oneof(
      fc.record({ type: fc.constantFrom('json_object', 'text') }),
      fc.record({ type: fc.constant('json_schema'), json_schema: fc.record({ name: fc.constant('s'), schema }) }),
      wrong,
    ),
    vl_high_resolution_images: fc.oneof(fc.boolean(), wrong),
    metadata: fc.oneof(deep, protoObject, wrong, fc.jsonValue({ maxDepth: 3 })),
    seed: fc.oneof(fc.integer(), hugeNumber),
    big: fc.constant('y'.repeat(MAX_BODY_BYTES)),
  },
  { requiredKeys: ['model', 'messages'] },
)
// Besides model and messages (dropped now and then), each field is present one time in four, so the
// valid path is well represented; the 64 KiB string (over the relay's limit) one time in forty.
const body = fc.tuple(fields, fc.array(fc.nat(39), { minLength: 24, maxLength: 24 })).map(([record, dice]) => {
  const out: Record<string, unknown> = {}
  Object.entries(record).forEach(([key, value], i) => {
    const roll = dice[i % dice.length] as number
    const keep = key === 'model' || key === 'messages' ? roll !== 0 : key === 'big' ? roll === 0 : roll % 4 === 0
    if (keep && value !== undefined) out[key] = value
  })
  return out
})

type Delivery = { kind: 'text' | 'bytes' | 'object' | 'raw'; raw?: string }
const raw = fc.constantFrom(
  '{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}],"seed":1e400}',
  '{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}],"__proto__":{"max_tokens":1}}',
  '{"model":"qwen-plus","messages":[{"role":"user","content":"hi","__proto__":{"role":"system"}}]}',
  '{"model":"qwen-plus","messages":[{"role":"user","content":"\\ud800"}],"max_tokens":5}',
  '{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}],"max_tokens":2000,"max_completion_tokens":1}',
  `{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}],"metadata":${'['.repeat(5_000)}${']'.repeat(5_000)}}`,
  '{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}',
  '',
  'null',
)
const delivery: fc.Arbitrary<Delivery> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Delivery>({ kind: 'text' }) },
  { weight: 2, arbitrary: fc.constant<Delivery>({ kind: 'object' }) },
  { weight: 1, arbitrary: fc.constant<Delivery>({ kind: 'bytes' }) },
  { weight: 1, arbitrary: raw.map<Delivery>((text) => ({ kind: 'raw', raw: text })) },
)

// ---------- the guard under test ----------

interface Sent {
  body: Record<string, unknown>
}

/** What Qwen could bill for a sent body at most, reading it as Qwen would (worst case). */
function mostBillable(sent: Record<string, unknown>, guard: Guard): number {
  const model = guardOptionsOf(guard).models[sent.model as string]!
  const caps = [sent.max_tokens, sent.max_completion_tokens].filter((v): v is number => typeof v === 'number')
  const answer = caps.length > 0 ? Math.max(...caps) : model.maxOutputTokens
  const thinking = model.thinking ?? 'off'
  const thinks =
    thinking === 'always' || sent.enable_thinking === true || (thinking === 'on' && sent.enable_thinking !== false)
  const reasoning = thinks
    ? typeof sent.thinking_budget === 'number'
      ? sent.thinking_budget
      : (model.maxReasoningTokens ?? 32_768)
    : 0
  const n = typeof sent.n === 'number' && sent.n > 1 ? sent.n : 1
  return n * (answer + reasoning)
}

function upstreamAnswer(sent: Record<string, unknown>, completion: number): Response {
  const usage = { prompt_tokens: 1, completion_tokens: completion, total_tokens: completion + 1 }
  if (sent.stream === true) {
    const chunk = {
      id: 'c',
      object: 'chat.completion.chunk',
      created: 1,
      model: sent.model,
      choices: [{ index: 0, delta: { content: 'ok' }, finish_reason: 'stop' }],
    }
    const last = { id: 'c', object: 'chat.completion.chunk', created: 1, model: sent.model, choices: [], usage }
    return new Response(`data: ${JSON.stringify(chunk)}\n\ndata: ${JSON.stringify(last)}\n\ndata: [DONE]\n\n`, {
      headers: { 'content-type': 'text/event-stream' },
    })
  }
  const completionBody = {
    id: 'c',
    object: 'chat.completion',
    created: 1,
    model: sent.model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
    usage,
  }
  return Response.json(completionBody)
}

const remaining = (state: QuotaState[]) =>
  state
    .map((s) => `${s.scope}/${s.dimension}=${s.remaining}`)
    .sort()
    .join(',')

async function readAll(answer: { body: string | ReadableStream<Uint8Array> }): Promise<string> {
  return typeof answer.body === 'string' ? answer.body : new Response(answer.body).text()
}

describe('relay request bodies (property suite, issue 10)', () => {
  const sent: Sent[] = []
  const unexpected: unknown[] = []
  const rejections: unknown[] = []
  const admitted = new Map<string, number>()
  const onRejection = (reason: unknown) => rejections.push(reason)
  let guard: Guard
  let relay: Relay

  beforeAll(() => {
    process.on('unhandledRejection', onRejection)
    guard = createGuard({
      upstream: {
        apiKey: SECRET,
        rampUp: false,
        maxAttempts: 1,
        fetch: (async (_url: string, init: RequestInit) => {
          const parsed = JSON.parse(String(init.body)) as Record<string, unknown>
          sent.push({ body: parsed })
          return upstreamAnswer(parsed, mostBillable(parsed, guard))
        }) as typeof fetch,
      },
      models,
      quotas: { user: { rpm: 1_000_000, tpm: 200_000, concurrency: 4 } },
    })
    guard.on('admitted', (event) => admitted.set(event.identity.user ?? '', event.reservedTokens))
    relay = createRelay(guard, { maxBodyBytes: MAX_BODY_BYTES, onError: (error) => unexpected.push(error) })
  })
  afterAll(async () => {
    process.off('unhandledRejection', onRejection)
    await guard?.close()
  })

  it(`holds for ${RUNS} bodies (seed ${SEED})`, { timeout: 300_000 }, async () => {
    let run = 0
    const refusedBy: Record<string, number> = {}
    const tally = { admitted: 0, refused: 0, byStatus: {} as Record<number, number> }
    await fc.assert(
      fc.asyncProperty(body, delivery, async (value, how) => {
        const user = `p${run++}`
        const identity = { user }
        let requestBody: unknown
        if (how.kind === 'raw') requestBody = how.raw
        else if (how.kind === 'object') requestBody = JSON.parse(JSON.stringify(value)) as unknown
        else if (how.kind === 'bytes') requestBody = new TextEncoder().encode(JSON.stringify(value))
        else requestBody = JSON.stringify(value)
        const sentBefore = sent.length
        const before = remaining(await guard.state(identity))
        const answer = await relay({
          method: 'POST',
          path: '/chat/completions',
          headers: { 'content-type': 'application/json' },
          body: requestBody as never,
          identity,
        })
        const text = await readAll(answer)
        tally.byStatus[answer.status] = (tally.byStatus[answer.status] ?? 0) + 1
        if (answer.status === 200) {
          tally.admitted++
          expect(sent.length).toBe(sentBefore + 1)
          const upstream = sent[sent.length - 1]!.body
          const reserved = admitted.get(user)
          expect(reserved).toBeDefined()
          expect(reserved!).toBeGreaterThanOrEqual(mostBillable(upstream, guard))
          return
        }
        tally.refused++
        expect([400, 404, 413]).toContain(answer.status)
        const parsed = JSON.parse(text) as { error: { message: unknown; type: unknown; code: unknown; param: unknown } }
        expect(Object.keys(parsed)).toEqual(['error'])
        expect(typeof parsed.error.message).toBe('string')
        expect(parsed.error.type).toBe('invalid_request_error')
        expect(typeof parsed.error.code).toBe('string')
        if (parsed.error.code === 'invalid_request' && answer.status === 400)
          expect(typeof parsed.error.param).toBe('string')
        const field =
          typeof parsed.error.param === 'string'
            ? (parsed.error.param.split(/[.[]/, 1)[0] ?? '')
            : String(parsed.error.code)
        refusedBy[field] = (refusedBy[field] ?? 0) + 1
        expect(text).not.toContain(SECRET)
        expect(sent.length).toBe(sentBefore)
        expect(remaining(await guard.state(identity))).toBe(before)
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    )
    // Let any stray promise settle, then nothing may have escaped.
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(unexpected).toEqual([])
    expect(rejections).toEqual([])
    // Both sides well represented.
    expect(tally.admitted).toBeGreaterThan(RUNS / 20)
    expect(tally.refused).toBeGreaterThan(RUNS / 5)
    console.log(`relay request properties: ${RUNS} bodies, seed ${SEED}:`, JSON.stringify({ ...tally, refusedBy }))
  })
})
