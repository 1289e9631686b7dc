import { describe, expect, it } from 'vitest'
import { QwenGuardError } from '../src/errors.js'
import { resolveOptions } from '../src/options.js'
import { planCall } from '../src/cost.js'
import { MAX_BODY_BYTES, validateChatRequest } from '../src/validate.js'

const options = resolveOptions({
  upstream: { apiKey: 'sk-test' },
  allowedModels: ['qwen3-max', 'qwen-plus', 'qwen-max'],
})
const ok = { model: 'qwen3-max', messages: [{ role: 'user', content: 'Hi' }] }

function refusal(body: unknown, limits?: { maxBodyBytes?: number }): QwenGuardError {
  try {
    validateChatRequest(body, options, limits)
  } catch (err) {
    expect(err).toBeInstanceOf(QwenGuardError)
    return err as QwenGuardError
  }
  throw new Error('expected a refusal')
}

describe('validateChatRequest: bad requests', () => {
  it.each<[string, unknown, number, string, string | null]>([
    ['not JSON', '{"model": "qwen3-max",', 400, 'invalid_json', null],
    ['JSON array', '[1,2]', 400, 'invalid_json', null],
    ['JSON null', 'null', 400, 'invalid_json', null],
    ['a number', 42, 400, 'invalid_json', null],
    ['missing model', { messages: ok.messages }, 400, 'invalid_request', 'model'],
    ['model not a string', { ...ok, model: 3 }, 400, 'invalid_request', 'model'],
    ['empty model', { ...ok, model: ' ' }, 400, 'invalid_request', 'model'],
    ['unknown model', { ...ok, model: 'gpt-4o' }, 404, 'model_not_found', 'model'],
    ['known but not allowed', { ...ok, model: 'qwen-flash' }, 404, 'model_not_found', 'model'],
    ['inherited property as model', { ...ok, model: 'constructor' }, 404, 'model_not_found', 'model'],
    ['missing messages', { model: 'qwen3-max' }, 400, 'invalid_request', 'messages'],
    ['messages not an array', { ...ok, messages: 'hi' }, 400, 'invalid_request', 'messages'],
    ['empty messages', { ...ok, messages: [] }, 400, 'invalid_request', 'messages'],
    ['message not an object', { ...ok, messages: ['hi'] }, 400, 'invalid_request', 'messages[0]'],
    ['bad role', { ...ok, messages: [{ role: 'robot', content: 'x' }] }, 400, 'invalid_request', 'messages[0].role'],
    ['missing role', { ...ok, messages: [{ content: 'x' }] }, 400, 'invalid_request', 'messages[0].role'],
    [
      'content a number',
      { ...ok, messages: [{ role: 'user', content: 5 }] },
      400,
      'invalid_request',
      'messages[0].content',
    ],
    [
      'user without content',
      { ...ok, messages: [{ role: 'system', content: 'a' }, { role: 'user' }] },
      400,
      'invalid_request',
      'messages[1].content',
    ],
    [
      'text part without text',
      { ...ok, messages: [{ role: 'user', content: [{ type: 'text' }] }] },
      400,
      'invalid_request',
      'messages[0].content[0].text',
    ],
    [
      'part without type',
      { ...ok, messages: [{ role: 'user', content: [{ text: 'x' }] }] },
      400,
      'invalid_request',
      'messages[0].content[0].type',
    ],
    [
      'tool message without id',
      { ...ok, messages: [{ role: 'tool', content: 'r' }] },
      400,
      'invalid_request',
      'messages[0].tool_call_id',
    ],
    [
      'name not a string',
      { ...ok, messages: [{ role: 'user', content: 'x', name: 1 }] },
      400,
      'invalid_request',
      'messages[0].name',
    ],
    ['max_tokens zero', { ...ok, max_tokens: 0 }, 400, 'invalid_request', 'max_tokens'],
    ['max_tokens fraction', { ...ok, max_tokens: 10.5 }, 400, 'invalid_request', 'max_tokens'],
    ['max_tokens string', { ...ok, max_tokens: '100' }, 400, 'invalid_request', 'max_tokens'],
    [
      'max_tokens over the model cap',
      { ...ok, model: 'qwen-max', max_tokens: 8193 },
      400,
      'invalid_request',
      'max_tokens',
    ],
    [
      'max_completion_tokens negative',
      { ...ok, max_completion_tokens: -1 },
      400,
      'invalid_request',
      'max_completion_tokens',
    ],
    ['n = 2', { ...ok, n: 2 }, 400, 'invalid_request', 'n'],
    ['stream not boolean', { ...ok, stream: 'yes' }, 400, 'invalid_request', 'stream'],
    [
      'stream_options without stream',
      { ...ok, stream_options: { include_usage: true } },
      400,
      'invalid_request',
      'stream_options',
    ],
    [
      'include_usage not boolean',
      { ...ok, stream: true, stream_options: { include_usage: 'yes' } },
      400,
      'invalid_request',
      'stream_options.include_usage',
    ],
    ['temperature 2.5', { ...ok, temperature: 2.5 }, 400, 'invalid_request', 'temperature'],
    ['temperature negative', { ...ok, temperature: -0.1 }, 400, 'invalid_request', 'temperature'],
    ['top_p 0', { ...ok, top_p: 0 }, 400, 'invalid_request', 'top_p'],
    ['top_p 1.5', { ...ok, top_p: 1.5 }, 400, 'invalid_request', 'top_p'],
    ['tools not an array', { ...ok, tools: {} }, 400, 'invalid_request', 'tools'],
    [
      'body too large',
      JSON.stringify({ ...ok, messages: [{ role: 'user', content: 'x'.repeat(MAX_BODY_BYTES) }] }),
      413,
      'request_too_large',
      null,
    ],
  ])('%s -> %i %s', (_name, body, status, code, param) => {
    const err = refusal(body)
    expect(err.status).toBe(status)
    expect(err.code).toBe(code)
    expect(err.param).toBe(param)
    expect(err.retryable).toBe(false)
    expect(err.scope).toBe('request')
    const answer = err.toHttp()
    expect(answer.status).toBe(status)
    expect(answer.headers['x-should-retry']).toBe('false')
    expect(answer.body.error).toEqual({ message: expect.any(String), type: 'invalid_request_error', code, param })
  })

  it('checks the size before parsing, for strings, bytes and objects', () => {
    const big = { ...ok, messages: [{ role: 'user', content: '你'.repeat(400) }] }
    const text = JSON.stringify(big)
    const limit = { maxBodyBytes: 1000 }
    expect(refusal(text, limit).code).toBe('request_too_large')
    expect(refusal(new TextEncoder().encode(text), limit).code).toBe('request_too_large')
    expect(refusal(big, limit).code).toBe('request_too_large')
    expect(refusal('{'.repeat(2000), limit).code).toBe('request_too_large')
  })

  it('does not echo a long model name in full', () => {
    const err = refusal({ ...ok, model: 'm'.repeat(5000) })
    expect(err.toHttp().body.error.message.length).toBeLessThan(200)
  })
})

describe('validateChatRequest: good requests', () => {
  it('accepts a JSON string, bytes and an object, passing unknown fields through', () => {
    const body = {
      ...ok,
      max_tokens: 100,
      stream: true,
      stream_options: { include_usage: true },
      enable_thinking: false,
      top_k: 20,
    }
    for (const input of [body, JSON.stringify(body), new TextEncoder().encode(JSON.stringify(body))]) {
      const req = validateChatRequest(input, options)
      expect(req.model).toBe('qwen3-max')
      expect(req.enable_thinking).toBe(false)
      expect(req.stream_options).toEqual({ include_usage: true })
      expect(planCall(req, options).answerTokens).toBe(100)
    }
  })

  it('accepts the shapes real clients send', () => {
    const req = validateChatRequest(
      {
        model: 'qwen-plus',
        messages: [
          { role: 'developer', content: 'Be brief.' },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'What is in it?' },
              { type: 'image_url', image_url: { url: 'https://x/y.png' } },
            ],
            name: 'ann',
          },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }],
          },
          { role: 'tool', tool_call_id: 'c1', content: '42' },
        ],
        max_completion_tokens: 32_768,
        n: 1,
        temperature: 0,
        top_p: 1,
        stream: false,
        stream_options: null,
        max_tokens: null,
        tools: [],
      },
      options,
    )
    expect(planCall(req, options).answerTokens).toBe(32_768)
    expect(req.messages).toHaveLength(4)
  })

  it('returns no max_tokens when none is asked for (the plan adds the default)', () => {
    const req = validateChatRequest(ok, options)
    expect(req.max_tokens).toBeUndefined()
    expect(planCall(req, options).upstreamFields).toEqual({ max_tokens: 1_024 })
  })
})

describe('validateChatRequest: bounds on what the guard serialises and estimates (issue 10 kind 5)', () => {
  /** `{"a":{"a":...}}` nested `depth` levels inside `field`, as JSON text. */
  function nested(depth: number, field = 'metadata'): string {
    return `{"model":"qwen3-max","messages":[{"role":"user","content":"hi"}],"${field}":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`
  }

  it('refuses a 10 KB body nested 5,000 deep with a 400 naming where (it used to pass and break re-serialisation)', () => {
    const text = `{"model":"qwen3-max","messages":[{"role":"user","content":"hi"}],"metadata":${'['.repeat(5_000)}${']'.repeat(5_000)}}`
    expect(text.length).toBeLessThan(11_000)
    const err = refusal(text)
    expect(err).toMatchObject({ status: 400, code: 'invalid_request', retryable: false })
    expect(err.param).toMatch(/^metadata\[0\]\[0\]/)
    expect(err.param!.length).toBeLessThanOrEqual(257)
  })

  it('accepts 64 levels and refuses 65, wherever they are', () => {
    // The body is depth 0, metadata depth 1: 63 more objects put the innermost value at depth 64.
    expect(() => validateChatRequest(nested(63), options)).not.toThrow()
    expect(refusal(nested(64)).param).toBe(`metadata${'.a'.repeat(63)}`)
    const deepContent = {
      ...ok,
      messages: [
        {
          role: 'user',
          content: [{ type: 'text', text: 'x', extra: JSON.parse(`${'['.repeat(70)}${']'.repeat(70)}`) }],
        },
      ],
    }
    expect(refusal(deepContent).param).toMatch(/^messages\[0\]\.content\[0\]\.extra\[0\]/)
    const deepSchema = JSON.parse(
      nested(80, 'tools')
        .replace('"tools":{"a":', '"tools":[{"type":"function","function":{"name":"f","parameters":{"a":')
        .replace(/1(}+)}$/, '1$1}}]}'),
    ) as unknown
    expect(refusal(deepSchema).param).toMatch(/^tools\[0\]\.function\.parameters\.a\.a/)
    expect(() => validateChatRequest(nested(100), options, { maxDepth: 128 })).not.toThrow()
  })

  it('refuses "__proto__" keys anywhere, and pollutes nothing', () => {
    const text = `{"model":"qwen3-max","messages":[{"role":"user","content":"hi","__proto__":{"role":"system"}}],"__proto__":{"max_tokens":1}}`
    expect(refusal(text)).toMatchObject({ status: 400, code: 'invalid_request', param: '__proto__' })
    expect(refusal(text.replace(',"__proto__":{"max_tokens":1}', ''))).toMatchObject({
      status: 400,
      param: 'messages[0].__proto__',
    })
    expect(
      refusal(
        `{"model":"qwen3-max","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"__proto__":{}}}}]}`,
      ).param,
    ).toBe('tools[0].function.parameters.__proto__')
    expect(({} as Record<string, unknown>).role).toBeUndefined()
    expect(({} as Record<string, unknown>).max_tokens).toBeUndefined()
    // "constructor" and "prototype" are ordinary names (a schema may well have such a property).
    const schema = { type: 'object', properties: { constructor: { type: 'string' }, prototype: { type: 'string' } } }
    expect(() =>
      validateChatRequest(
        { ...ok, tools: [{ type: 'function', function: { name: 'f', parameters: schema } }] },
        options,
      ),
    ).not.toThrow()
  })

  it('takes JSON values only from an object handed over in process', () => {
    const withProto = Object.assign(Object.create({ max_tokens: 1 }) as object, ok)
    expect(refusal(withProto)).toMatchObject({ status: 400, param: '' })
    expect(refusal({ ...ok, metadata: { when: new Date(0) } }).param).toBe('metadata.when')
    expect(refusal({ ...ok, metadata: { n: 10n } }).param).toBe('metadata.n')
    expect(refusal({ ...ok, metadata: { f: () => 1 } }).param).toBe('metadata.f')
    expect(refusal({ ...ok, temperature: Number.NaN }).param).toBe('temperature')
    expect(refusal({ ...ok, metadata: [1, Infinity] }).param).toBe('metadata[1]')
    const cycle: Record<string, unknown> = { ...ok }
    cycle.self = cycle
    expect(refusal(cycle)).toMatchObject({ status: 400, code: 'invalid_request' })
    // A value that was undefined is dropped by JSON, as it would be on the wire.
    expect(() => validateChatRequest({ ...ok, user: undefined }, options)).not.toThrow()
  })

  it('refuses numbers JSON text cannot carry (1e400 parses to Infinity)', () => {
    expect(refusal(`{"model":"qwen3-max","messages":[{"role":"user","content":"hi"}],"seed":1e400}`)).toMatchObject({
      status: 400,
      param: 'seed',
    })
  })

  it('bounds the work on an in-process object before serialising it (a shared array 2^40 times over is 413 at once)', () => {
    let value: unknown = ['x'.repeat(10)]
    for (let i = 0; i < 40; i++) value = [value, value]
    const started = performance.now()
    expect(refusal({ ...ok, metadata: value })).toMatchObject({ status: 413, code: 'request_too_large' })
    expect(performance.now() - started).toBeLessThan(2_000)
  })

  it.each<[string, unknown, string]>([
    ['an unknown part type', [{ type: 'hologram', hologram: {} }], 'messages[0].content[0].type'],
    ['an image part without a url', [{ type: 'image_url', image_url: {} }], 'messages[0].content[0].image_url'],
    [
      'a video part that is not a list of frames',
      [{ type: 'video', video: 'https://x/v.mp4' }],
      'messages[0].content[0].video',
    ],
    [
      'an audio part without data',
      [{ type: 'input_audio', input_audio: { format: 'wav' } }],
      'messages[0].content[0].input_audio',
    ],
    ['a refusal part without refusal text', [{ type: 'refusal' }], 'messages[0].content[0].refusal'],
  ])('refuses %s', (_name, content, param) => {
    expect(refusal({ ...ok, messages: [{ role: 'user', content }] })).toMatchObject({ status: 400, param })
  })

  it.each<[string, Record<string, unknown>, string]>([
    ['a tool that is not an object', { tools: ['f'] }, 'tools[0]'],
    ['a tool without a type', { tools: [{ function: { name: 'f' } }] }, 'tools[0].type'],
    ['a function tool without a function', { tools: [{ type: 'function' }] }, 'tools[0].function'],
    [
      'a function without a name',
      { tools: [{ type: 'function', function: { parameters: {} } }] },
      'tools[0].function.name',
    ],
    [
      'parameters that are not a schema object',
      { tools: [{ type: 'function', function: { name: 'f', parameters: [] } }] },
      'tools[0].function.parameters',
    ],
    ['functions not an array', { functions: { name: 'f' } }, 'functions'],
    ['a function definition without a name', { functions: [{ parameters: {} }] }, 'functions[0].name'],
    ['tool_choice a number', { tool_choice: 1 }, 'tool_choice'],
    ['response_format a string', { response_format: 'json' }, 'response_format'],
    ['response_format without a type', { response_format: { json_schema: {} } }, 'response_format.type'],
    [
      'a tool call that is not an object',
      { messages: [{ role: 'assistant', content: null, tool_calls: ['x'] }] },
      'messages[0].tool_calls[0]',
    ],
    ['both caps and n = 2', { max_tokens: 10, n: 2 }, 'n'],
    ['thinking on a model without it', { model: 'qwen-max', enable_thinking: true }, 'enable_thinking'],
  ])('refuses %s', (_name, patch, param) => {
    expect(refusal({ ...ok, ...patch })).toMatchObject({ status: 400, code: 'invalid_request', param })
  })

  it('refuses an object where a number belongs without converting it (its own toString used to throw: a 500)', () => {
    const text =
      '{"model":"qwen3-max","messages":[{"role":"user","content":"hi"}],"temperature":{"toString":[1],"valueOf":2}}'
    expect(refusal(text)).toMatchObject({ status: 400, code: 'invalid_request', param: 'temperature' })
    expect(refusal(JSON.parse(text) as unknown)).toMatchObject({ status: 400, param: 'temperature' })
  })

  it('accepts unicode of every kind (lone surrogates, RTL marks, emoji) and counts it', () => {
    const content = 'a\ud800b \u202eמשהו\u202c 👩‍👩‍👧 \udfff'
    const req = validateChatRequest(JSON.stringify({ ...ok, messages: [{ role: 'user', content }] }), options)
    expect(req.messages[0]!.content).toBe(content)
    expect(planCall(req, options).promptTokens).toBeGreaterThan(5)
  })
})
