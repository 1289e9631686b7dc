/**
 * Bad requests through the relay, on both frameworks: each gets its documented status and code,
 * an OpenAI-shaped body, and never reaches Qwen (the simulator sees no call at all).
 */
import type { Simulator } from '../packages/simulator/src/index.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  guardOptions,
  ResponseTap,
  startApp,
  startSecretSimulator,
  type Framework,
  type GuardedApp,
} from './http-support.js'

const tap = new ResponseTap()
afterAll(() => tap.assertNoSecrets())

const ok = { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] }
const json = { 'content-type': 'application/json' }

interface BadRequest {
  name: string
  method?: string
  path?: string
  headers?: Record<string, string>
  body?: string | Uint8Array<ArrayBuffer>
  status: number
  code: string
  param?: string | null
}

const with_ = (patch: Record<string, unknown>) => JSON.stringify({ ...ok, ...patch })

const table: BadRequest[] = [
  { name: 'invalid JSON', body: '{"model": "qwen-plus",', status: 400, code: 'invalid_json' },
  { name: 'an empty body', body: '', status: 400, code: 'invalid_json' },
  { name: 'a JSON array', body: '[1, 2]', status: 400, code: 'invalid_json' },
  {
    name: 'no messages',
    body: JSON.stringify({ model: 'qwen-plus' }),
    status: 400,
    code: 'invalid_request',
    param: 'messages',
  },
  { name: 'empty messages', body: with_({ messages: [] }), status: 400, code: 'invalid_request', param: 'messages' },
  {
    name: 'messages not an array',
    body: with_({ messages: 'Hi' }),
    status: 400,
    code: 'invalid_request',
    param: 'messages',
  },
  {
    name: 'a bad role',
    body: with_({ messages: [{ role: 'wizard', content: 'Hi' }] }),
    status: 400,
    code: 'invalid_request',
    param: 'messages[0].role',
  },
  {
    name: 'a message without content',
    body: with_({ messages: [{ role: 'user' }] }),
    status: 400,
    code: 'invalid_request',
    param: 'messages[0].content',
  },
  {
    name: 'no model',
    body: JSON.stringify({ messages: ok.messages }),
    status: 400,
    code: 'invalid_request',
    param: 'model',
  },
  { name: 'an unknown model', body: with_({ model: 'gpt-4o' }), status: 404, code: 'model_not_found', param: 'model' },
  { name: 'max_tokens 0', body: with_({ max_tokens: 0 }), status: 400, code: 'invalid_request', param: 'max_tokens' },
  {
    name: 'max_tokens too big',
    body: with_({ max_tokens: 10_000_000 }),
    status: 400,
    code: 'invalid_request',
    param: 'max_tokens',
  },
  {
    name: 'max_tokens not an integer',
    body: with_({ max_tokens: 12.5 }),
    status: 400,
    code: 'invalid_request',
    param: 'max_tokens',
  },
  {
    name: 'stream not a boolean',
    body: with_({ stream: 'yes' }),
    status: 400,
    code: 'invalid_request',
    param: 'stream',
  },
  {
    name: 'stream_options without stream',
    body: with_({ stream_options: { include_usage: true } }),
    status: 400,
    code: 'invalid_request',
    param: 'stream_options',
  },
  {
    name: 'temperature out of range',
    body: with_({ temperature: 3 }),
    status: 400,
    code: 'invalid_request',
    param: 'temperature',
  },
  { name: 'n > 1', body: with_({ n: 3 }), status: 400, code: 'invalid_request', param: 'n' },
  {
    name: 'a body over the limit',
    body: with_({ messages: [{ role: 'user', content: 'x'.repeat(70 * 1024) }] }),
    status: 413,
    code: 'request_too_large',
  },
  // Issue 10 kind 5: what the guard serialises is bounded before anything is counted or sent.
  {
    name: 'a 10 KB body nested 5,000 deep',
    body: `{"model":"qwen-plus","messages":[{"role":"user","content":"Hi"}],"metadata":${'['.repeat(5_000)}${']'.repeat(5_000)}}`,
    status: 400,
    code: 'invalid_request',
    param: `metadata${'[0]'.repeat(63)}`,
  },
  {
    name: 'a "__proto__" key',
    body: '{"model":"qwen-plus","messages":[{"role":"user","content":"Hi"}],"__proto__":{"max_tokens":1}}',
    status: 400,
    code: 'invalid_request',
    param: '__proto__',
  },
  {
    name: 'a number JSON cannot carry',
    body: with_({ seed: 1 }).replace('"seed":1', '"seed":1e400'),
    status: 400,
    code: 'invalid_request',
    param: 'seed',
  },
  {
    name: 'an unknown content part type',
    body: with_({ messages: [{ role: 'user', content: [{ type: 'hologram' }] }] }),
    status: 400,
    code: 'invalid_request',
    param: 'messages[0].content[0].type',
  },
  {
    name: 'a function tool without a function',
    body: with_({ tools: [{ type: 'function' }] }),
    status: 400,
    code: 'invalid_request',
    param: 'tools[0].function',
  },
  // Issue 10 kind 1: fields the reservation cannot bound are refused, naming the field.
  {
    name: 'thinking_budget not an integer',
    body: with_({ enable_thinking: true, thinking_budget: 'lots' }),
    status: 400,
    code: 'invalid_request',
    param: 'thinking_budget',
  },
  {
    name: 'thinking on a model without it',
    body: with_({ model: 'qwen-max', enable_thinking: true }),
    status: 400,
    code: 'invalid_request',
    param: 'enable_thinking',
  },
  {
    name: 'enable_search not a boolean',
    body: with_({ enable_search: 'yes' }),
    status: 400,
    code: 'invalid_request',
    param: 'enable_search',
  },
  {
    name: 'the code interpreter',
    body: with_({ enable_code_interpreter: true }),
    status: 400,
    code: 'invalid_request',
    param: 'enable_code_interpreter',
  },
  {
    name: 'audio output',
    body: with_({ modalities: ['text', 'audio'] }),
    status: 400,
    code: 'invalid_request',
    param: 'modalities',
  },
  {
    name: 'a non-JSON content type',
    headers: { 'content-type': 'text/plain' },
    body: JSON.stringify(ok),
    status: 400,
    code: 'invalid_request',
  },
  {
    name: 'a charset other than UTF-8',
    headers: { 'content-type': 'application/json; charset=iso-8859-1' },
    body: JSON.stringify(ok),
    status: 400,
    code: 'invalid_request',
  },
  {
    name: 'bytes that are not UTF-8 (Latin-1 under no charset)',
    body: new Uint8Array(Buffer.from(with_({ messages: [{ role: 'user', content: 'café' }] }), 'latin1')),
    status: 400,
    code: 'invalid_request',
  },
  {
    name: 'a Content-Encoding',
    headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
    body: JSON.stringify(ok),
    status: 400,
    code: 'invalid_request',
  },
  { name: 'GET on chat/completions', method: 'GET', status: 405, code: 'method_not_allowed' },
  {
    name: 'POST on models',
    method: 'POST',
    path: '/models',
    body: JSON.stringify(ok),
    status: 405,
    code: 'method_not_allowed',
  },
  { name: 'an unknown path', path: '/embeddings', body: JSON.stringify(ok), status: 404, code: 'not_found' },
]

describe.each<Framework>(['express', 'koa', 'node'])(
  '%s relay refuses bad requests before any upstream call',
  (framework) => {
    let sim: Simulator
    let app: GuardedApp
    beforeAll(async () => {
      sim = await startSecretSimulator()
      app = await startApp(framework, guardOptions(sim, { user: { rpm: 1_000 } }), tap)
    })
    afterAll(async () => {
      await app?.close()
      await sim?.close()
      expect(sim.stats().calls).toBe(0)
    })

    it.each([
      ['', 'GET /v1.'],
      ['/', 'GET /v1.'],
      ['/embeddings', 'GET /v1/embeddings.'],
    ])('names the URL the client asked for: GET /v1%s', async (path, named) => {
      const response = await fetch(`${app.baseURL}${path}`)
      expect(response.status).toBe(404)
      const { error } = (await response.json()) as { error: { message: string } }
      expect(error.message).toContain(`Unknown request URL: ${named} This relay serves POST /v1/chat/completions`)
    })

    it.each(table)(
      '$name -> $status $code',
      async ({ method = 'POST', path = '/chat/completions', headers = json, body, status, code, param }) => {
        const response = await fetch(`${app.baseURL}${path}`, {
          method,
          headers: { ...headers, 'x-user': 'bad' },
          ...(body === undefined ? {} : { body }),
        })
        expect(response.status).toBe(status)
        const answer = (await response.json()) as { error: Record<string, unknown> }
        expect(Object.keys(answer)).toEqual(['error'])
        expect(answer.error).toMatchObject({ message: expect.any(String), type: 'invalid_request_error', code })
        if (param !== undefined) expect(answer.error.param).toBe(param)
        // Answers of the guard's validation tell the SDK not to retry (the same body, path or method
        // fails again), the relay's own 404 / 405 included.
        expect(response.headers.get('x-should-retry')).toBe('false')
        // Nothing reached Qwen and nothing was counted.
        expect(sim.stats().calls).toBe(0)
        const rpm = (await app.guard.guard.state({ user: 'bad' })).find((s) => s.dimension === 'rpm')
        expect(rpm?.remaining).toBe(1_000)
      },
    )
  },
)
