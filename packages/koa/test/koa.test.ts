import { createGuard, QwenGuardError, type Guard } from '@qwen-guard/core'
import Koa from 'koa'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import type { Simulator } from '../../simulator/src/index.js'
import { expectRefusal, guardOptions, ResponseTap, startSecretSimulator } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const tap = new ResponseTap()
const messages = [{ role: 'user' as const, content: 'Hello there' }]
let sim: Simulator
let core: Guard

beforeAll(async () => {
  sim = await startSecretSimulator({ burst: false })
  core = createGuard(guardOptions(sim, { user: { rps: 1 } }))
})
afterAll(async () => {
  await core?.close()
  await sim?.close()
  tap.assertNoSecrets()
})

function koa(...middleware: Koa.Middleware[]) {
  const app = new Koa()
  app.silent = true
  for (const fn of middleware) app.use(fn)
  return request(tap.wrap(app.callback()))
}

describe('qwenGuard (Koa)', () => {
  it('costs a route that never calls Qwen no client', async () => {
    const spy = vi.spyOn(core, 'client')
    await koa(qwenGuard(core), (ctx) => {
      ctx.body = 'ok'
    })
      .get('/')
      .expect(200, 'ok')
    expect(spy).not.toHaveBeenCalled()
    spy.mockRestore()
  })

  it('sets ctx.qwen and ctx.state.qwen for the socket address, ignoring X-Forwarded-For even with app.proxy', async () => {
    const app = new Koa()
    app.proxy = true
    app.use(qwenGuard(core))
    app.use(async (ctx) => {
      const answer = await ctx.qwen.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
      ctx.body = {
        identity: ctx.qwenIdentity,
        same: ctx.state.qwen === ctx.qwen,
        text: answer.choices[0]?.message.content,
      }
    })
    const { body } = await request(tap.wrap(app.callback())).get('/').set('x-forwarded-for', '198.51.100.7').expect(200)
    expect(body).toMatchObject({ identity: { user: '127.0.0.1' }, same: true })
    expect(body.text).toBeTruthy()
  })

  it('answers a refusal thrown further down with all its headers, keeping headers set before the throw', async () => {
    const guard = qwenGuard(core, { identify: (ctx) => ({ user: ctx.get('x-user') }) })
    const ask = async (ctx: Koa.Context) => {
      ctx.set('x-trace-id', 'trace-1')
      ctx.body = await ctx.qwen.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
    }
    await koa(guard, ask).get('/').set('x-user', 'koa-refused').expect(200)
    const refused = await koa(guard, ask).get('/').set('x-user', 'koa-refused')
    expectRefusal(refused.status, refused.headers, refused.body)
    expect(refused.headers['x-trace-id']).toBe('trace-1')
  })

  it('translates a QwenGuardError the app throws itself, and leaves other errors to Koa', async () => {
    const guard = qwenGuard(core)
    const refusal = new QwenGuardError({
      status: 503,
      code: 'upstream_unavailable',
      message: 'busy',
      scope: 'upstream',
      retryAfterMs: 2500,
    })
    const thrown = await koa(guard, () => {
      throw refusal
    }).get('/')
    expect(thrown.status).toBe(503)
    expect(thrown.headers).toMatchObject({ 'retry-after': '3', 'retry-after-ms': '2500' })
    expect(thrown.body.error.code).toBe('upstream_unavailable')
    const other = await koa(guard, () => {
      throw new Error('secret detail')
    }).get('/')
    expect(other.status).toBe(500)
    expect(other.text).not.toContain('secret detail')
  })

  it('mounts the relay under its prefix and passes other paths on', async () => {
    const guard = qwenGuard(core, { identify: () => ({ user: 'koa-relay' }) })
    const rest: Koa.Middleware = (ctx) => {
      ctx.body = 'app route'
    }
    const app = () => koa(guard, guard.proxy({ prefix: '/v1/' }), rest)
    await app().get('/other').expect(200, 'app route')
    await app().get('/v1x/models').expect(200, 'app route')
    const models = await app().get('/v1/models').expect(200)
    expect(models.body.object).toBe('list')
    const { body, headers } = await app()
      .post('/v1/chat/completions')
      .send({ model: 'qwen-plus', messages, max_tokens: 5 })
      .expect(200)
    expect(body.object).toBe('chat.completion')
    expect(headers['x-qwen-guard-model']).toBe('qwen-plus')
    const missing = (await app().get('/v1/nope').expect(404)).body.error
    expect(missing.code).toBe('not_found')
    expect(missing.message).toContain('GET /v1/nope') // the URL the client called, mount included
    expect(missing.message).toContain('GET /v1/models')
  })

  it('writes a relayed stream itself: headers of earlier middleware kept, the chain resolves when it has ended', async () => {
    const guard = qwenGuard(core, { identify: () => ({ user: 'koa-relay-stream' }) })
    const seen: Array<{ status: number; ended: boolean }> = []
    const cors: Koa.Middleware = async (ctx, next) => {
      ctx.set('access-control-allow-origin', '*')
      await next()
      seen.push({ status: ctx.status, ended: ctx.res.writableEnded })
    }
    const { text, headers } = await koa(cors, guard, guard.proxy())
      .post('/v1/chat/completions')
      .send({ model: 'qwen-plus', messages, max_tokens: 5, stream: true })
      .expect(200)
    expect(headers['content-type']).toMatch(/^text\/event-stream/)
    expect(headers['access-control-allow-origin']).toBe('*')
    expect(headers['x-qwen-guard-model']).toBe('qwen-plus')
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    expect(seen).toEqual([{ status: 200, ended: true }])
  })

  it('uses a body a parser already put on ctx.request.body', async () => {
    const guard = qwenGuard(core, { identify: () => ({ user: 'koa-parsed' }) })
    const fakeParser: Koa.Middleware = async (ctx, next) => {
      const chunks: Buffer[] = []
      for await (const chunk of ctx.req) chunks.push(chunk as Buffer)
      ;(ctx.request as { body?: unknown }).body = JSON.parse(Buffer.concat(chunks).toString())
      await next()
    }
    const { body } = await koa(guard, fakeParser, guard.proxy())
      .post('/v1/chat/completions')
      .send({ model: 'qwen-plus', messages, max_tokens: 5 })
      .expect(200)
    expect(body.object).toBe('chat.completion')
  })
})
