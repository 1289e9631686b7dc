import { createGuard, type Guard } from '@qwen-guard/core'
import express, { type ErrorRequestHandler } from 'express'
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

/** supertest against the app, every response recorded. */
const client = (app: express.Express) => request(tap.wrap(app))

describe('qwenGuard (Express)', () => {
  it('costs a route that never calls Qwen no client and no identity', async () => {
    const spy = vi.spyOn(core, 'client')
    const guard = qwenGuard(core)
    const app = express()
      .use(guard)
      .get('/plain', (_req, res) => void res.send('ok'))
    await client(app).get('/plain').expect(200, 'ok')
    expect(spy).not.toHaveBeenCalled()
    spy.mockRestore()
  })

  it('gives req.qwen for the socket address, ignoring X-Forwarded-For even with trust proxy', async () => {
    const guard = qwenGuard(core)
    const app = express()
      .set('trust proxy', true)
      .use(guard)
      .get('/ask', async (req, res) => {
        const answer = await req.qwen.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 })
        res.json({ identity: req.qwenIdentity, same: req.qwen === req.qwen, text: answer.choices[0]?.message.content })
      })
    const { body } = await client(app).get('/ask').set('x-forwarded-for', '198.51.100.7').expect(200)
    expect(body.identity).toEqual({ user: '127.0.0.1' })
    expect(body.same).toBe(true)
    expect(body.text).toBeTruthy()
  })

  it('keeps req.qwen inside a mounted sub-app and a router', async () => {
    const guard = qwenGuard(core, { identify: () => ({ user: 'express-sub' }) })
    const sub = express().get(
      '/who',
      (req, res) => void res.json({ identity: req.qwenIdentity, client: typeof req.qwen?.chat }),
    )
    const router = express
      .Router()
      .get('/who', (req, res) => void res.json({ identity: req.qwenIdentity, client: typeof req.qwen?.chat }))
    const app = express().use(guard).use('/sub', sub).use('/router', router)
    for (const path of ['/sub/who', '/router/who']) {
      const { body } = await client(app).get(path).expect(200)
      expect(body).toEqual({ identity: { user: 'express-sub' }, client: 'object' })
    }
    // A request that did not pass the middleware has neither.
    const bare = express().get(
      '/who',
      (req, res) => void res.json({ identity: req.qwenIdentity ?? null, client: req.qwen ?? null }),
    )
    expect((await client(bare).get('/who').expect(200)).body).toEqual({ identity: null, client: null })
  })

  it('answers a refusal thrown by req.qwen through guard.errors: 429, Retry-After, RateLimit fields, OpenAI body', async () => {
    const guard = qwenGuard(core, { identify: async (req) => ({ user: String(req.headers['x-user']) }) })
    const app = express()
      .use(guard)
      .get('/ask', async (req, res) => {
        res.json(await req.qwen.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5 }))
      })
      .use(guard.errors)
    await client(app).get('/ask').set('x-user', 'express-refused').expect(200)
    const refused = await client(app).get('/ask').set('x-user', 'express-refused')
    expectRefusal(refused.status, refused.headers, refused.body)
    expect(refused.body.error.code).toBe('rate_limit_exceeded')
  })

  it('passes errors that are not the guard to the next error handler', async () => {
    const guard = qwenGuard(core)
    const seen: unknown[] = []
    const last: ErrorRequestHandler = (err, _req, res, _next) => {
      seen.push(err)
      res.status(418).send('mine')
    }
    const app = express()
      .use(guard)
      .get('/boom', () => {
        throw new Error('route failed')
      })
      .use(guard.errors, last)
    await client(app).get('/boom').expect(418, 'mine')
    expect(seen).toHaveLength(1)
  })

  it.each([
    [
      'throws',
      () => {
        throw new Error('no session')
      },
    ],
    ['rejects', async () => Promise.reject(new Error('no session'))],
  ])('an identify that %s fails the routes that read req.qwen (next(err)), not the others', async (_how, identify) => {
    const guard = qwenGuard(core, { identify })
    const app = express()
      .use(guard)
      .get('/page', (_req, res) => void res.send('no Qwen here'))
      .get('/ask', (req, res) => void res.json(req.qwen.baseURL))
      .get('/who', (req, res) => void res.json(req.qwenIdentity))
      .use(((err: Error, _req, res, _next) => void res.status(401).send(`who? ${err.message}`)) as ErrorRequestHandler)
    await client(app).get('/page').expect(200, 'no Qwen here')
    await client(app).get('/ask').expect(401, 'who? no session')
    await client(app).get('/who').expect(401, 'who? no session')
  })

  it('a later middleware that sets req.qwenIdentity mends a failed identify', async () => {
    const guard = qwenGuard(core, {
      identify: () => {
        throw new Error('no session')
      },
    })
    const app = express()
      .use(guard)
      .use((req, _res, next) => {
        req.qwenIdentity = { user: 'mended' }
        next()
      })
      .get('/who', (req, res) => void res.json(req.qwenIdentity))
    await client(app).get('/who').expect(200, { user: 'mended' })
  })

  it('relays without express.json() and with a body express.json() already parsed', async () => {
    const guard = qwenGuard(core, { identify: (req) => ({ user: `relay-${String(req.headers['x-user'])}` }) })
    const raw = express().use('/v1', guard.proxy())
    const parsed = express().use(express.json()).use('/v1', guard.proxy())
    for (const [user, app] of Object.entries({ raw, parsed })) {
      const { body, headers } = await client(app)
        .post('/v1/chat/completions')
        .set('x-user', user)
        .send({ model: 'qwen-plus', messages, max_tokens: 5 })
        .expect(200)
      expect(body.object).toBe('chat.completion')
      expect(headers['x-qwen-guard-model']).toBe('qwen-plus')
    }
    await client(raw).get('/v1/models').expect(200)
    const missing = await client(raw).get('/v1/nope').expect(404)
    expect(missing.body.error.code).toBe('not_found')
    // The message names the URL the client called, mount included, and the routes under that mount.
    expect(missing.body.error.message).toContain('GET /v1/nope')
    expect(missing.body.error.message).toContain('POST /v1/chat/completions')
    const wrong = await client(raw).get('/v1/chat/completions').expect(405)
    expect(wrong.body.error.message).toBe('GET is not allowed on /v1/chat/completions; use POST.')
  })

  it('closes only a guard it created', async () => {
    const spy = vi.spyOn(core, 'close')
    await qwenGuard(core).close()
    expect(spy).not.toHaveBeenCalled()
    spy.mockRestore()
    const owned = qwenGuard({ ...guardOptions(sim), identify: () => ({ user: 'x' }) })
    expect(owned.guard).not.toBe(core)
    await owned.close()
  })
})
