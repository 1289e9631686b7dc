/**
 * Whose quota an Express request is charged to: a missing or blank user is the client address (never
 * "no limits"), on `req.qwen` and on the relay alike; a non-string identity part is a TypeError the
 * app's error handlers get, and nothing is counted or sent upstream for it.
 */
import { createGuard, type Guard, type GuardOptions, type QuotaPolicies } from '@qwen-guard/core'
import express, { type ErrorRequestHandler, type Request } from 'express'
import request from 'supertest'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Simulator } from '../../simulator/src/index.js'
import { guardOptions, keyedBy, ResponseTap, startSecretSimulator } from '../../../test/http-support.js'
import { qwenGuard, type QwenGuardMiddleware } from '../src/index.js'

const tap = new ResponseTap()
const messages = [{ role: 'user' as const, content: 'Hello there' }]
const chat = { model: 'qwen-plus', messages, max_tokens: 1 }
let sim: Simulator
const opened: Array<Guard | QwenGuardMiddleware> = []

beforeAll(async () => {
  sim = await startSecretSimulator({ burst: false })
})
afterEach(async () => {
  await Promise.all(opened.splice(0).map((guard) => guard.close()))
})
afterAll(async () => {
  await sim?.close()
  tap.assertNoSecrets()
})

const client = (app: express.Express) => request(tap.wrap(app))

/** Guard options against the simulator, without the new-account ramp (22 calls must not wait on pacing). */
function options(quotas: QuotaPolicies): GuardOptions {
  const base = guardOptions(sim, quotas)
  return { ...base, upstream: { ...base.upstream, rampUp: false } }
}

/** `req.user`, as a session or passport middleware would set it (absent: an anonymous caller). */
type WithUser = Request & { user?: { id: unknown } }

/** The README's own example: user from the session, key from a header, 20 calls a minute per user. */
function readmeGuard(quotas: QuotaPolicies = { user: { rpm: 20 } }) {
  const guard = qwenGuard({
    ...options(quotas),
    identify: (req) => ({ user: (req as WithUser).user?.id as string, key: req.get('x-api-key') }),
  })
  opened.push(guard)
  return guard
}

/**
 * An app where `setUser` decides `req.user`, a route asking Qwen through req.qwen, one that does not,
 * the relay at /v1. `seen`: what the app's error handler and the relay's onError were given.
 */
function appWith(guard: QwenGuardMiddleware, setUser: (req: WithUser) => void = () => {}) {
  const seen: unknown[] = []
  const app = express()
    .use((req, _res, next) => {
      setUser(req as WithUser)
      next()
    })
    .use(guard)
    .get('/ask', async (req, res) => {
      await req.qwen.chat.completions.create(chat)
      res.json({ identity: req.qwenIdentity })
    })
    .get('/page', (_req, res) => void res.send('no Qwen here'))
    .use('/v1', guard.proxy({ onError: (error) => void seen.push(error) }))
    .use(guard.errors)
    .use(((err, _req, res, _next) => {
      seen.push(err)
      res.status(500).json({ error: { message: 'Internal error', type: 'server_error' } })
    }) as ErrorRequestHandler)
  return { app, seen }
}

describe('identity (Express)', () => {
  it("limits the README example's anonymous callers by address: 22 calls at rpm 20, 2 refused", async () => {
    const { app } = appWith(readmeGuard())
    const statuses: number[] = []
    for (let i = 0; i < 22; i++) statuses.push((await client(app).get('/ask')).status)
    expect(statuses.filter((status) => status === 200)).toHaveLength(20)
    expect(statuses.slice(20)).toEqual([429, 429])
  })

  it('limits anonymous callers of the relay by address too, with and without the middleware', async () => {
    const guard = readmeGuard({ user: { rpm: 3 } })
    const { app: mounted } = appWith(guard)
    const relayOnly = express().use('/v1', guard.proxy())
    const statuses: number[] = []
    for (const app of [mounted, mounted, relayOnly, relayOnly]) {
      statuses.push((await client(app).post('/v1/chat/completions').send(chat)).status)
    }
    expect(statuses).toEqual([200, 200, 200, 429])
  })

  it.each([
    ["''", ''],
    ['null', null],
    ['whitespace', ' \t '],
    ['undefined', undefined],
  ])('charges user %s to the client address, keeping the key (keyed by its hash)', async (_name, user) => {
    const guard = readmeGuard()
    const { app } = appWith(guard, (req) => {
      ;(req as unknown as { user: unknown }).user = { id: user }
    })
    const { body } = await client(app).get('/ask').set('x-api-key', 'k1').expect(200)
    expect(body.identity).toEqual({ user: '127.0.0.1', key: keyedBy('k1') })
    const left = (await guard.guard.state({ user: '127.0.0.1' })).find((s) => s.dimension === 'rpm')
    expect(left?.remaining).toBe(19)
  })

  it('drops an empty key header rather than charging it', async () => {
    const { app } = appWith(readmeGuard(), (req) => {
      req.user = { id: 'alice' }
    })
    const { body } = await client(app).get('/ask').set('x-api-key', '').expect(200)
    expect(body.identity).toEqual({ user: 'alice' })
  })

  it.each([
    [{ id: 1 }, 'object'],
    [{ id: 2 }, 'object'],
    [123, 'number'],
    [true, 'boolean'],
  ])(
    'fails what uses user %o with a TypeError, counting and calling nothing; other routes answer',
    async (user, kind) => {
      const guard = readmeGuard({ user: { rpm: 1 } })
      const { app, seen } = appWith(guard, (req) => {
        ;(req as unknown as { user: unknown }).user = { id: user }
      })
      const calls = sim.stats().calls
      for (const path of ['/ask', '/ask']) await client(app).get(path).expect(500)
      // The relay answers with its own OpenAI-shaped 500 and tells onError, even behind app.use(guard).
      const relayed = await client(app).post('/v1/chat/completions').send(chat).expect(500)
      expect(relayed.body).toEqual({ error: expect.objectContaining({ code: 'internal_error' }) })
      await client(app).get('/page').expect(200, 'no Qwen here')
      expect(seen).toHaveLength(3)
      for (const error of seen)
        expect(error).toEqual(new TypeError(`identify(): identity.user must be a string, got ${kind}`))
      expect(sim.stats().calls).toBe(calls)
    },
  )

  it('keys an over-long identity part (a header any client fills) by its hash: answered, nothing reported', async () => {
    const guard = readmeGuard()
    const { app, seen } = appWith(guard, (req) => {
      req.user = { id: 'alice' }
    })
    const key = `secret-${'x'.repeat(300)}`
    const answer = await client(app).get('/ask').set('x-api-key', key).expect(200)
    expect(answer.body.identity).toEqual({ user: 'alice', key: expect.stringMatching(/^sha256:/) })
    expect(answer.text).not.toContain('secret')
    await client(app).post('/v1/chat/completions').set('x-api-key', key).send(chat).expect(200)
    expect(seen).toEqual([])
    const left = (await guard.guard.state(answer.body.identity)).find(
      (s) => s.scope === 'user' && s.dimension === 'rpm',
    )
    expect(left?.remaining).toBe(18) // both calls charged to alice, whatever the key's length
  })

  it('rejects an async identify that resolves to a non-string part', async () => {
    const core = createGuard(options({ user: { rpm: 5 } }))
    opened.push(core)
    const guard = qwenGuard(core, { identify: async () => ({ user: 42 as unknown as string }) })
    const { app, seen } = appWith(guard)
    await client(app).get('/ask').expect(500)
    expect(seen).toEqual([new TypeError('identify(): identity.user must be a string, got number')])
  })

  it('applies the same rule to req.qwenIdentity set by a later middleware', async () => {
    const core = createGuard(options({ user: { rpm: 5 } }))
    opened.push(core)
    const guard = qwenGuard(core)
    const errors: unknown[] = []
    const app = express()
      .use(guard)
      .get('/blank', async (req, res) => {
        req.qwenIdentity = { user: '', key: 'k9' }
        res.json(req.qwenIdentity)
      })
      .get('/number', (req, res) => {
        try {
          req.qwenIdentity = { user: 7 as unknown as string }
        } catch (error) {
          errors.push(error)
        }
        res.json(req.qwenIdentity)
      })
    expect((await client(app).get('/blank').expect(200)).body).toEqual({ user: '127.0.0.1', key: keyedBy('k9') })
    expect((await client(app).get('/number').expect(200)).body).toEqual({ user: '127.0.0.1' })
    expect(errors).toEqual([new TypeError('qwenIdentity: identity.user must be a string, got number')])
  })
})

describe('auth mounted after the guard (identify asked again where Qwen is used)', () => {
  const strict = (req: Request) => ({ user: (req as WithUser).user!.id as string }) // throws without req.user
  const lenient = (req: Request) => ({ user: (req as WithUser).user?.id as string })
  const auth: express.RequestHandler = (req, _res, next) => {
    ;(req as WithUser).user = { id: req.get('x-user') ?? '' }
    next()
  }

  it.each([
    ['names no user', lenient],
    ['throws', strict],
  ])('an identify that %s at the middleware is charged to the user the route auth set', async (_what, identify) => {
    const guard = qwenGuard({ ...options({ user: { rpm: 5 } }), identify })
    opened.push(guard)
    const app = express()
      .use(guard)
      .get('/ask', auth, async (req, res) => {
        await req.qwen.chat.completions.create(chat)
        res.json(req.qwenIdentity)
      })
      .use('/v1', auth, guard.proxy())
    expect((await client(app).get('/ask').set('x-user', 'alice').expect(200)).body).toEqual({ user: 'alice' })
    await client(app).post('/v1/chat/completions').set('x-user', 'alice').send(chat).expect(200)
    const rpm = async (user: string) =>
      (await guard.guard.state({ user })).find((s) => s.dimension === 'rpm')?.remaining
    expect(await rpm('alice')).toBe(3)
    expect(await rpm('127.0.0.1')).toBe(5)
  })

  it('still charges an anonymous caller (no auth anywhere) to its address', async () => {
    const guard = qwenGuard({ ...options({ user: { rpm: 5 } }), identify: lenient })
    opened.push(guard)
    const app = express()
      .use(guard)
      .get('/ask', async (req, res) => {
        await req.qwen.chat.completions.create(chat)
        res.json(req.qwenIdentity)
      })
    expect((await client(app).get('/ask').expect(200)).body).toEqual({ user: '127.0.0.1' })
  })
})

describe('adapter options beside a guard', () => {
  it('refuses a bare identify function or a misspelled key at start-up instead of ignoring it', async () => {
    const guard = createGuard(guardOptions(sim))
    opened.push(guard)
    const fn = (req: Request) => ({ user: String(req.get('x-user')) })
    expect(() => qwenGuard(guard, fn as never)).toThrow(/pass \{ identify: fn \}/)
    expect(() => qwenGuard(guard, { identfy: fn } as never)).toThrow(/identfy: unknown adapter option/)
    const app = express().use(qwenGuard(guard, { identify: fn }))
    app.get('/who', (req, res) => {
      res.json(req.qwenIdentity)
    })
    expect((await request(app).get('/who').set('x-user', 'carol').expect(200)).body).toEqual({ user: 'carol' })
  })
})
