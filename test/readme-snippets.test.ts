/**
 * The READMEs' TypeScript blocks are copies of examples/snippets/*.ts (checked here), which
 * `pnpm typecheck` compiles under strict TypeScript; the runnable ones run here against the simulator
 * (calls to the default DashScope endpoint are redirected to it, and DASHSCOPE_API_KEY is its key).
 */
import { fileURLToPath } from 'node:url'
import { DEFAULT_BASE_URL } from '@qwen-guard/core'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
// @ts-expect-error a plain .mjs script without declarations
import { syncSnippets } from '../scripts/readme-snippets.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
let sim: Simulator
const closers: Array<() => Promise<void>> = []

beforeAll(async () => {
  sim = await startSimulator({ port: 0 })
  vi.stubEnv('DASHSCOPE_API_KEY', 'sk-sim')
  vi.stubEnv('PORT', '0') // the package snippets listen (a free port here) to show the SIGTERM shutdown
  const realFetch = globalThis.fetch
  vi.stubGlobal('fetch', (input: string | URL | Request, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
    if (url.startsWith(DEFAULT_BASE_URL)) return realFetch(sim.url + url.slice(DEFAULT_BASE_URL.length), init)
    return realFetch(input, init)
  })
})

afterAll(async () => {
  for (const close of closers) await close()
  vi.unstubAllGlobals()
  vi.unstubAllEnvs()
  await sim?.close()
})

const chat = { model: 'qwen-plus', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] }

describe('README snippets', () => {
  it('every TypeScript block in the READMEs is a snippet file, unchanged', () => {
    const { problems } = syncSnippets(root) as { problems: string[] }
    expect(problems).toEqual([])
  })

  it('simulator: counts the one call in its busiest minute', async () => {
    const { busiestMinute } = await import('../examples/snippets/simulator.js')
    expect(busiestMinute).toBe(1)
  })

  it('usage report: the one call it made is in the report, with the limits of its account x model', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {})
    try {
      const { report } = await import('../examples/snippets/usage-report.js')
      expect(
        report.lanes.map((lane) => [lane.account, lane.model, lane.requests, lane.peaks.requestsPerMinute.limit]),
      ).toEqual([['default', 'qwen-plus', 1, 600]])
      expect(log.mock.calls.flat().join(' ')).toMatch(
        /^default x qwen-plus: peak 1\/600 RPM, \d+\/1000000 TPM, at the limit 0\.0 %/,
      )
    } finally {
      log.mockRestore()
    }
  })

  it('quotas.md, events and call ids: every event of the call carries the id the request header set', async () => {
    const { callId, trace } = await import('../examples/snippets/docs-quotas-events.js')
    expect(trace.map((e) => e.type)).toEqual(expect.arrayContaining(['admitted', 'settled']))
    expect(trace.every((e) => 'callId' in e && e.callId === callId)).toBe(true)
  })

  it('core (README.md and packages/core): the guarded client answers and the guard closes', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {})
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
    try {
      const before = sim.stats().accepted
      await import('../examples/snippets/core.js')
      await import('../examples/snippets/core-package.js')
      expect(sim.stats().accepted - before).toBe(2)
      expect(write).toHaveBeenCalled() // the streamed words
      expect(log.mock.calls.flat().join(' ')).not.toMatch(/retry in/) // nothing was refused
    } finally {
      log.mockRestore()
      write.mockRestore()
    }
  })

  for (const name of ['express', 'express-package'] as const) {
    it(`${name}: /ask answers through req.qwen, the relay answers, guard.errors answers refusals`, async () => {
      const { app, guard, server } = (await import(
        `../examples/snippets/${name}.ts`
      )) as typeof import('../examples/snippets/express.js') & { server?: import('node:http').Server }
      closers.push(() => guard.close())
      if (server) closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const ask = await request(app).post('/ask').send({ messages: chat.messages })
      expect(ask.status).toBe(200)
      const relayed = await request(app).post('/v1/chat/completions').send(chat)
      expect(relayed.status).toBe(200)
      expect(relayed.body.object).toBe('chat.completion')
      // A QwenGuardError thrown by req.qwen (no messages: checked before anything is counted) reaches
      // guard.errors: an OpenAI-shaped 400, not Express's HTML page.
      const refused = await request(app).post('/ask').send({ messages: [] })
      expect(refused.status).toBe(400)
      expect(refused.headers['content-type']).toMatch(/^application\/json/)
      expect(refused.body.error.code).toBe('invalid_request')
    })
  }

  it('koa (README.md): the relay answers', async () => {
    const { app, guard } = await import('../examples/snippets/koa.js')
    closers.push(() => guard.close())
    const relayed = await request(app.callback()).post('/v1/chat/completions').send(chat)
    expect(relayed.status).toBe(200)
    expect(relayed.body.object).toBe('chat.completion')
  })

  it('koa-package: /ask answers through ctx.qwen', async () => {
    const { app, guard, server } = await import('../examples/snippets/koa-package.js')
    closers.push(() => guard.close())
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
    expect(server.listening).toBe(true)
    const ask = await request(app.callback()).get('/ask').query({ q: 'hi' })
    expect(ask.status).toBe(200)
    expect(typeof ask.body.text).toBe('string')
  })
})
