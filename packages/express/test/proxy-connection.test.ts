/**
 * guard.proxy() (Express) on one keep-alive connection: the connection's one signal,
 * requests of other connections, streams whose client leaves; req.qwen on the same connection.
 */
import { getEventListeners } from 'node:events'
import http, { type ServerResponse } from 'node:http'
import express from 'express'
import OpenAI from 'openai'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { createGuard, type Guard } from '@qwen-guard/core'
import { connectionGoneSignal } from '@qwen-guard/core/adapter'
import { describe, expect, it, vi } from 'vitest'
import { closedAfterEach, listen, warningsDuring } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const KEY = 'sk-attack-express-secret-77'
const opened = closedAfterEach()
const messages = [{ role: 'user' as const, content: 'Hello there' }]

async function setUp(
  quotas: Record<string, unknown> = { user: { tpm: 1_000_000 } },
  simOptions = {},
  models: Record<string, unknown> = {},
) {
  const sim: Simulator = await startSimulator({
    accounts: [{ id: 'acct-x', keys: [KEY] }],
    burst: false,
    ...simOptions,
  })
  opened.push(sim)
  const core: Guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: KEY, rampUp: false, maxAttempts: 1, timeoutMs: 5_000 },
    quotas: quotas as never,
    queue: { maxWaitMs: 3_000 },
    models: models as never,
  })
  opened.push(core)
  const events: Array<{ type: string }> = []
  core.on('queued', (e) => events.push(e))
  const guard = qwenGuard(core, { identify: (req) => ({ user: String(req.headers['x-user'] ?? 'anon') }) })
  const signals = new Set<AbortSignal>()
  const app = express()
    .use((_req, res, next) => {
      signals.add(connectionGoneSignal(res as unknown as ServerResponse))
      next()
    })
    .use(guard)
    .post('/ask', async (req, res, next) => {
      try {
        const stream = await req.qwen.chat.completions.create({ model: 'qwen-plus', messages, stream: true })
        let text = ''
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
        res.json({ text })
      } catch (error) {
        next(error)
      }
    })
    .use('/v1', guard.proxy())
    .use(guard.errors)
  const served = await listen(app)
  opened.push(served)
  const url = served.url
  return { sim, core, url, signals, events }
}

describe('Express proxy on a keep-alive connection', () => {
  it('40 calls through the SDK on one connection (JSON, streams, req.qwen route, refusals): no listener left, no warning', async () => {
    const { url, signals } = await setUp({ user: { tpm: 1_000_000, rpm: 20 } })
    const w = warningsDuring()
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const client = new OpenAI({
      baseURL: `${url}/v1`,
      apiKey: 'x',
      maxRetries: 0,
      httpAgent: agent,
      defaultHeaders: { 'x-user': 'ann' },
    } as never)
    try {
      const outcomes: string[] = []
      for (let i = 0; i < 40; i++) {
        try {
          if (i % 3 === 0) {
            const c = await client.chat.completions.create({ model: 'qwen-plus', messages })
            outcomes.push(c.object)
          } else if (i % 3 === 1) {
            const s = await client.chat.completions.create({ model: 'qwen-plus', messages, stream: true })
            for await (const _ of s);
            outcomes.push('stream')
          } else {
            const r = await client.post('/../ask', { body: {} }).catch((e: { status?: number }) => e)
            outcomes.push(`ask ${(r as { status?: number }).status ?? 'ok'}`)
          }
        } catch (error) {
          outcomes.push(String((error as { status?: number }).status))
        }
      }
      expect(outcomes).toContain('ask ok') // req.qwen on the same connection
      expect(outcomes).toContain('429')
      expect(outcomes).toContain('stream')
      await new Promise((r) => setTimeout(r, 50))
      for (const s of signals) expect(getEventListeners(s, 'abort')).toHaveLength(0)
      expect(w.warnings.map(String)).toEqual([])
    } finally {
      w.stop()
      agent.destroy()
    }
  })

  it("a client leaving while queued for upstream capacity drops only its own call; another connection's call is answered", async () => {
    // the guard paces qwen-plus at about one request a second: B and C queue behind A
    const { url, sim, events } = await setUp(
      { user: { tpm: 1_000_000 } },
      {},
      { 'qwen-plus': { rpm: 60, tpm: 1_000_000 } },
    )
    const ask = (user: string, signal?: AbortSignal) =>
      fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-user': user },
        body: JSON.stringify({ model: 'qwen-plus', messages }),
        ...(signal ? { signal } : {}),
      })
    expect((await ask('a')).status).toBe(200)
    const leaving = new AbortController()
    const b = ask('b', leaving.signal).catch((e: Error) => e)
    const c = ask('c')
    await vi.waitFor(() => expect(events.filter((e) => e.type === 'queued').length).toBeGreaterThanOrEqual(2))
    leaving.abort()
    expect(await b).toBeInstanceOf(Error)
    const answered = await c
    expect(answered.status).toBe(200)
    expect(sim.stats().accepted).toBe(2) // A and C; B left while queued
  })

  it('a stream whose client leaves mid-answer stops the upstream stream', async () => {
    const { url, sim } = await setUp({ user: { tpm: 1_000_000 } }, { perTokenMs: 50 })
    const controller = new AbortController()
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 })
    const stream = await client.chat.completions.create(
      { model: 'qwen-plus', messages, stream: true, max_tokens: 400 },
      { signal: controller.signal },
    )
    let n = 0
    await (async () => {
      for await (const _ of stream) if (++n === 2) controller.abort()
    })().catch(() => undefined)
    expect(sim.stats().inFlight).toBe(1)
    // a whole answer would take 20 s more
    await vi.waitFor(() => expect(sim.stats().inFlight).toBe(0), { timeout: 2_000 })
  })
})
