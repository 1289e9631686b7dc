import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startSimulator, type Simulator } from '../src/index.js'
import { client, post, rejection, USER } from './helpers.js'

let sim: Simulator

beforeAll(async () => {
  sim = await startSimulator({ burst: false, maxBodyBytes: 10_000, limits: { 'my-model': { maxTokens: 100 } } })
})
afterAll(() => sim.close())

const cases: [string, string | object, number, string, string | null][] = [
  ['invalid JSON', '{"model":', 400, 'invalid_request_error', null],
  ['a JSON array', '[]', 400, 'invalid_request_error', null],
  ['no model', { messages: USER }, 400, 'invalid_parameter_error', 'model'],
  ['no messages', { model: 'qwen-plus' }, 400, 'invalid_parameter_error', 'messages'],
  ['empty messages', { model: 'qwen-plus', messages: [] }, 400, 'invalid_parameter_error', 'messages'],
  [
    'a message without role',
    { model: 'qwen-plus', messages: [{ content: 'hi' }] },
    400,
    'invalid_parameter_error',
    'messages',
  ],
  ['unknown model', { model: 'qwen-nope', messages: USER }, 404, 'model_not_found', 'model'],
  ['max_tokens 0', { model: 'qwen-plus', messages: USER, max_tokens: 0 }, 400, 'invalid_parameter_error', 'max_tokens'],
  [
    'max_tokens over the model cap',
    { model: 'qwen-flash', messages: USER, max_tokens: 32_769 },
    400,
    'invalid_parameter_error',
    'max_tokens',
  ],
  [
    'max_tokens over a configured cap',
    { model: 'my-model', messages: USER, max_tokens: 101 },
    400,
    'invalid_parameter_error',
    'max_tokens',
  ],
  [
    'max_tokens not an integer',
    { model: 'qwen-plus', messages: USER, max_tokens: 1.5 },
    400,
    'invalid_parameter_error',
    'max_tokens',
  ],
  [
    'a body over maxBodyBytes',
    { model: 'qwen-plus', messages: [{ role: 'user', content: 'x'.repeat(20_000) }] },
    413,
    'request_too_large',
    null,
  ],
]

describe('bad input', () => {
  it.each(cases)('%s -> %i %s', async (_name, body, status, code, param) => {
    const res = await post(sim, body)
    expect(res.status).toBe(status)
    const parsed = JSON.parse(res.text)
    expect(parsed.error).toEqual({ message: expect.any(String), type: 'invalid_request_error', code, param })
    expect(parsed.request_id).toBe(res.headers.get('x-request-id'))
  })

  it('counts nothing for bad input', () => {
    const s = sim.stats()
    expect(s.accepted).toBe(0)
    expect(s.refused.invalid_parameter_error).toBeGreaterThanOrEqual(6)
    expect(Object.keys(s.accounts.default ?? {}).every((m) => s.accounts.default![m]!.accepted === 0)).toBe(true)
  })

  it('accepts max_tokens at the cap, and a model added by `limits`', async () => {
    expect((await post(sim, { model: 'qwen-flash', messages: USER, max_tokens: 32_768 })).status).toBe(200)
    expect((await post(sim, { model: 'my-model', messages: USER, max_tokens: 100 })).status).toBe(200)
  })

  it('surfaces through the SDK as the matching error classes', async () => {
    const ai = client(sim)
    const notFound = await rejection(ai.chat.completions.create({ model: 'qwen-nope', messages: USER }))
    expect(notFound).toBeInstanceOf(OpenAI.NotFoundError)
    expect(notFound.code).toBe('model_not_found')
    const bad = await rejection(ai.chat.completions.create({ model: 'qwen-plus', messages: [] }))
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError)
  })
})

describe('routes', () => {
  it('GET /models lists the model table, with a valid key only', async () => {
    const list = await client(sim).models.list()
    const ids = list.data.map((m) => m.id)
    expect(ids).toEqual(
      expect.arrayContaining([
        'qwen3-max',
        'qwen3-max-2025-09-23',
        'qwen-max',
        'qwen-plus',
        'qwen-flash',
        'qwen-turbo',
        'my-model',
      ]),
    )
    const err = await rejection(client(sim, 'sk-bad').models.list())
    expect(err.status).toBe(401)
  })

  it('answers other paths with 404 and wrong methods with 405', async () => {
    expect((await fetch(`${sim.url}/embeddings`, { method: 'POST' })).status).toBe(404)
    expect((await fetch(`${sim.url}/chat/completions`)).status).toBe(405)
  })
})
