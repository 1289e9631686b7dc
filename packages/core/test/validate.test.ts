import { describe, expect, it } from 'vitest'
import { QwenGuardError } from '../src/errors.js'
import { resolveOptions } from '../src/options.js'
import { planCall } from '../src/cost.js'
import { MAX_BODY_BYTES, validateChatRequest } from '../src/validate.js'

const options = resolveOptions({ upstream: { apiKey: 'sk-test' }, allowedModels: ['qwen3-max', 'qwen-plus', 'qwen-max'] })
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
    ['content a number', { ...ok, messages: [{ role: 'user', content: 5 }] }, 400, 'invalid_request', 'messages[0].content'],
    ['user without content', { ...ok, messages: [{ role: 'system', content: 'a' }, { role: 'user' }] }, 400, 'invalid_request', 'messages[1].content'],
    ['text part without text', { ...ok, messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 400, 'invalid_request', 'messages[0].content[0].text'],
    ['part without type', { ...ok, messages: [{ role: 'user', content: [{ text: 'x' }] }] }, 400, 'invalid_request', 'messages[0].content[0].type'],
    ['tool message without id', { ...ok, messages: [{ role: 'tool', content: 'r' }] }, 400, 'invalid_request', 'messages[0].tool_call_id'],
    ['name not a string', { ...ok, messages: [{ role: 'user', content: 'x', name: 1 }] }, 400, 'invalid_request', 'messages[0].name'],
    ['max_tokens zero', { ...ok, max_tokens: 0 }, 400, 'invalid_request', 'max_tokens'],
    ['max_tokens fraction', { ...ok, max_tokens: 10.5 }, 400, 'invalid_request', 'max_tokens'],
    ['max_tokens string', { ...ok, max_tokens: '100' }, 400, 'invalid_request', 'max_tokens'],
    ['max_tokens over the model cap', { ...ok, model: 'qwen-max', max_tokens: 8193 }, 400, 'invalid_request', 'max_tokens'],
    ['max_completion_tokens negative', { ...ok, max_completion_tokens: -1 }, 400, 'invalid_request', 'max_completion_tokens'],
    ['n = 2', { ...ok, n: 2 }, 400, 'invalid_request', 'n'],
    ['stream not boolean', { ...ok, stream: 'yes' }, 400, 'invalid_request', 'stream'],
    ['stream_options without stream', { ...ok, stream_options: { include_usage: true } }, 400, 'invalid_request', 'stream_options'],
    ['include_usage not boolean', { ...ok, stream: true, stream_options: { include_usage: 'yes' } }, 400, 'invalid_request', 'stream_options.include_usage'],
    ['temperature 2.5', { ...ok, temperature: 2.5 }, 400, 'invalid_request', 'temperature'],
    ['temperature negative', { ...ok, temperature: -0.1 }, 400, 'invalid_request', 'temperature'],
    ['top_p 0', { ...ok, top_p: 0 }, 400, 'invalid_request', 'top_p'],
    ['top_p 1.5', { ...ok, top_p: 1.5 }, 400, 'invalid_request', 'top_p'],
    ['tools not an array', { ...ok, tools: {} }, 400, 'invalid_request', 'tools'],
    ['body too large', JSON.stringify({ ...ok, messages: [{ role: 'user', content: 'x'.repeat(MAX_BODY_BYTES) }] }), 413, 'request_too_large', null],
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
    const body = { ...ok, max_tokens: 100, stream: true, stream_options: { include_usage: true }, enable_thinking: false, top_k: 20 }
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
          { role: 'user', content: [{ type: 'text', text: 'What is in it?' }, { type: 'image_url', image_url: { url: 'https://x/y.png' } }], name: 'ann' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
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
