/**
 * Whose quota a Koa request is charged to: a missing or blank user is the client address (never
 * "no limits"), on `ctx.qwen` and on the relay alike; a non-string identity part is a TypeError
 * thrown to Koa's error handling (a 500 that does not echo it), and nothing is counted or sent.
 */
import { createGuard, type Guard, type GuardOptions, type QuotaPolicies } from '@qwen-guard/core'
import Koa from 'koa'
import request from 'supertest'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Simulator } from '../../simulator/src/index.js'
import { guardOptions, keyedBy, ResponseTap, startSecretSimulator } from '../../../test/http-support.js'
import { qwenGuard, type QwenGuardKoaMiddleware } from '../src/index.js'

const tap = new ResponseTap()
const messages = [{ role: 'user' as const, content: 'Hello there' }]
const chat = { model: 'qwen-plus', messages, max_tokens: 1 }
let sim: Simulator
const opened: Array<Guard | QwenGuardKoaMiddleware> = []

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

/** Guard options against the simulator, without the new-account ramp (22 calls must not wait on pacing). */
function options(quotas: QuotaPolicies): GuardOptions {
  const base = guardOptions(sim, quotas)
  return { ...base, upstream: { ...base.upstream, rampUp: false } }
}

/** The README's example in Koa: user from `ctx.state.user` (a session), key from a header (`ctx.get` gives '' when absent). */
function readmeGuard(quotas: QuotaPolicies = { user: { rpm: 20 } }) {
  const guard = qwenGuard({
    ...options(quotas),
    identify: (ctx) => ({
      user: (ctx.state.user as { id?: string } | undefined)?.id as string,
      key: ctx.get('x-api-key'),
    }),
  })
  opened.push(guard)
  return guard
}

/** An app where `setUser` decides `ctx.state.user`, a route asking Qwen through ctx.qwen, the relay at /v1. */
function appWith(guard: QwenGuardKoaMiddleware, setUser: (state: Koa.DefaultState) => void = () => {}) {
  const seen: unknown[] = []
  const app = new Koa()
  app.silent = true
  app.on('error', (error: unknown) => void seen.push(error))
  app.use(async (ctx, next) => {
    setUser(ctx.state)
    await next()
  })
  app.use(guard)
  app.use(guard.proxy({ prefix: '/v1', onError: (error) => void seen.push(error) }))
  app.use(async (ctx) => {
    if (ctx.path === '/page') return void (ctx.body = 'no Qwen here')
    await ctx.qwen.chat.completions.create(chat)
    ctx.body = { identity: ctx.qwenIdentity }
  })
  return { agent: () => request(tap.wrap(app.callback())), seen }
}

describe('auth mounted after the guard (identify asked again where Qwen is used)', () => {
  it.each([
    ['names no user', (ctx: Koa.Context) => ({ user: (ctx.state.user as { id?: string } | undefined)?.id as string })],
    ['throws', (ctx: Koa.Context) => ({ user: (ctx.state.user as { id: string }).id })],
  ])('an identify that %s at the middleware is charged to the user a later auth set', async (_what, identify) => {
    const guard = qwenGuard({ ...options({ user: { rpm: 5 } }), identify })
    opened.push(guard)
    const app = new Koa()
    app.use(guard)
    app.use(async (ctx, next) => {
      ctx.state.user = { id: ctx.get('x-user') }
      await next()
    })
    app.use(async (ctx) => {
      await ctx.qwen.chat.completions.create(chat)
      ctx.body = ctx.qwenIdentity
    })
    const agent = request(tap.wrap(app.callback()))
    expect((await agent.get('/ask').set('x-user', 'alice').expect(200)).body).toEqual({ user: 'alice' })
    const rpm = async (user: string) =>
      (await guard.guard.state({ user })).find((s) => s.dimension === 'rpm')?.remaining
    expect(await rpm('alice')).toBe(4)
    expect(await rpm('127.0.0.1')).toBe(5)
  })
})

describe('identity (Koa)', () => {
  it("limits the README example's anonymous callers by address: 22 calls at rpm 20, 2 refused", async () => {
    const { agent } = appWith(readmeGuard())
    const statuses: number[] = []
    for (let i = 0; i < 22; i++) statuses.push((await agent().get('/ask')).status)
    expect(statuses.filter((status) => status === 200)).toHaveLength(20)
    expect(statuses.slice(20)).toEqual([429, 429])
  })

  it('limits anonymous callers of the relay by address too, with and without the middleware', async () => {
    const guard = readmeGuard({ user: { rpm: 3 } })
    const { agent: mounted } = appWith(guard)
    const relayOnly = new Koa()
    relayOnly.use(guard.proxy({ prefix: '/v1' }))
    const bare = () => request(tap.wrap(relayOnly.callback()))
    const statuses: number[] = []
    for (const agent of [mounted, mounted, bare, bare])
      statuses.push((await agent().post('/v1/chat/completions').send(chat)).status)
    expect(statuses).toEqual([200, 200, 200, 429])
  })

  it.each([
    ["''", ''],
    ['null', null],
    ['whitespace', ' \t '],
    ['undefined', undefined],
  ])('charges user %s to the client address, keeping the key (keyed by its hash)', async (_name, user) => {
    const guard = readmeGuard()
    const { agent } = appWith(guard, (state) => {
      ;(state as { user?: unknown }).user = { id: user }
    })
    const { body } = await agent().get('/ask').set('x-api-key', 'k1').expect(200)
    expect(body.identity).toEqual({ user: '127.0.0.1', key: keyedBy('k1') })
    const left = (await guard.guard.state({ user: '127.0.0.1' })).find((s) => s.dimension === 'rpm')
    expect(left?.remaining).toBe(19)
  })

  it("drops the '' ctx.get() gives for a missing key header", async () => {
    const { agent } = appWith(readmeGuard(), (state) => {
      state.user = { id: 'alice' }
    })
    expect((await agent().get('/ask').expect(200)).body.identity).toEqual({ user: 'alice' })
  })

  it.each([
    [{ id: 1 }, 'object'],
    [{ id: 2 }, 'object'],
    [123, 'number'],
    [true, 'boolean'],
  ])(
    'throws user %o to Koa as a TypeError (500) where it is used, counting and calling nothing',
    async (user, kind) => {
      const guard = readmeGuard({ user: { rpm: 1 } })
      const { agent, seen } = appWith(guard, (state) => {
        ;(state as { user?: unknown }).user = { id: user }
      })
      const calls = sim.stats().calls
      for (const path of ['/ask', '/ask'])
        expect((await agent().get(path).expect(500)).text).toBe('Internal Server Error')
      // The relay answers with its own OpenAI-shaped 500 and tells onError, even behind app.use(guard).
      const relayed = await agent().post('/v1/chat/completions').send(chat).expect(500)
      expect(relayed.body).toEqual({ error: expect.objectContaining({ code: 'internal_error' }) })
      await agent().get('/page').expect(200, 'no Qwen here')
      expect(seen).toHaveLength(3)
      for (const error of seen) {
        expect(error).toBeInstanceOf(TypeError)
        expect((error as Error).message).toBe(`identify(): identity.user must be a string, got ${kind}`)
      }
      expect(sim.stats().calls).toBe(calls)
    },
  )

  it('keys an over-long identity part by its hash: answered, nothing reported', async () => {
    const { agent, seen } = appWith(readmeGuard(), (state) => {
      state.user = { id: `secret-${'x'.repeat(300)}` }
    })
    const answer = await agent().get('/ask').expect(200)
    expect(answer.body.identity).toEqual({ user: expect.stringMatching(/^sha256:[\w-]{43}$/) })
    expect(answer.text).not.toContain('secret')
    expect(seen).toEqual([])
  })

  it('applies the same rule to ctx.qwenIdentity set by a later middleware', async () => {
    const core = createGuard(options({ user: { rpm: 5 } }))
    opened.push(core)
    const errors: unknown[] = []
    const app = new Koa()
    app.use(qwenGuard(core))
    app.use((ctx) => {
      if (ctx.path === '/blank') ctx.qwenIdentity = { user: '', key: 'k9' }
      else {
        try {
          ctx.qwenIdentity = { user: 7 as unknown as string }
        } catch (error) {
          errors.push(error)
        }
      }
      ctx.body = ctx.qwenIdentity
    })
    const agent = () => request(tap.wrap(app.callback()))
    expect((await agent().get('/blank').expect(200)).body).toEqual({ user: '127.0.0.1', key: keyedBy('k9') })
    expect((await agent().get('/number').expect(200)).body).toEqual({ user: '127.0.0.1' })
    expect(errors).toEqual([new TypeError('qwenIdentity: identity.user must be a string, got number')])
  })
})
