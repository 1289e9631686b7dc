/**
 * The Koa example as a user runs it: its own process (tsx, like `pnpm start:koa`), PORT=0, the
 * embedded simulator. Chat through ctx.qwen, the quota route, the relay with the openai SDK, a
 * refusal with Retry-After, and a clean stop on SIGINT.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../../../', import.meta.url))
let child: ChildProcess
let base = ''
/** What the example printed to stderr (a person's console). */
let stderr = ''

beforeAll(async () => {
  child = spawn(
    process.execPath,
    [`${root}node_modules/tsx/dist/cli.mjs`, '--conditions=source', 'examples/koa-chat/server.ts'],
    {
      cwd: root,
      env: { ...process.env, PORT: '0', DASHSCOPE_API_KEY: '', REDIS_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  base = await new Promise<string>((resolve, reject) => {
    let output = ''
    const timer = setTimeout(() => reject(new Error(`the Koa example did not start: ${output}`)), 20_000)
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const match = /on (http:\/\/127\.0\.0\.1:\d+)\//.exec(output)
      if (match) {
        clearTimeout(timer)
        resolve(match[1]!)
      }
    })
    child.once('exit', (code) => reject(new Error(`the Koa example exited with ${code}: ${output}`)))
  })
}, 30_000)

afterAll(() => {
  if (child.exitCode === null) child.kill('SIGKILL')
})

const chat = (message: string) =>
  fetch(`${base}/chat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message }),
  })

describe('examples/koa-chat', () => {
  it('answers through ctx.qwen and charges the caller quota', async () => {
    const answer = await chat('Hello from a test')
    expect(answer.status).toBe(200)
    expect((await answer.text()).length).toBeGreaterThan(0)
    const quota = (await (await fetch(`${base}/quota`)).json()) as Array<{
      dimension: string
      remaining: number
      limit: number
    }>
    const rpm = quota.find((state) => state.dimension === 'rpm')!
    expect(rpm.remaining).toBe(rpm.limit - 1)
  })

  it('serves the OpenAI-compatible relay to the openai SDK', async () => {
    const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'anything', maxRetries: 0 })
    const models = await openai.models.list()
    expect(models.data.map((model) => model.id)).toContain('qwen3-max')
    const completion = await openai.chat.completions.create({
      model: 'qwen-plus',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 5,
    })
    expect(completion.choices[0]?.message.content).toBeTruthy()
  })

  it('prints nothing when a client leaves a streamed answer, closing or resetting its connection', async () => {
    const printed = stderr.length
    const body = JSON.stringify({ message: 'Tell me a long story' })
    for (const how of ['close', 'reset'] as const) {
      const socket = net.connect(Number(new URL(base).port), '127.0.0.1')
      socket.on('error', () => undefined)
      let received = ''
      await new Promise<void>((resolve) => {
        socket.on('data', (chunk: Buffer) => {
          received += chunk.toString()
          // Headers and the first streamed words are in: leave mid-answer.
          if (/\r\n\r\n[\s\S]+/.test(received)) resolve()
        })
        socket.write(
          `POST /chat?stream=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        )
      })
      expect(received).toMatch(/^HTTP\/1\.1 200/)
      if (how === 'close') socket.destroy()
      else socket.resetAndDestroy()
      // The guard settles the call and frees its concurrency lease once the client is gone.
      await expect
        .poll(
          async () => {
            const quota = (await (await fetch(`${base}/quota`)).json()) as Array<{
              dimension: string
              limit: number
              remaining: number
            }>
            const concurrency = quota.find((state) => state.dimension === 'concurrency')!
            return concurrency.limit - concurrency.remaining
          },
          { timeout: 5_000 },
        )
        .toBe(0)
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(stderr.slice(printed)).toBe('')
  })

  it('refuses past the per-user limits with Retry-After, RateLimit fields and an OpenAI-shaped body', async () => {
    // The example allows 2 calls in flight per user: 6 at once must bring refusals, answered at once.
    const controller = new AbortController()
    const responses = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        fetch(`${base}/chat`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ message: `message ${i}` }),
          signal: controller.signal,
        }).catch(() => undefined),
      ),
    )
    const refusal = responses.find((response) => response?.status === 429)
    expect(refusal).toBeDefined()
    const body: unknown = await refusal!.json()
    controller.abort() // the admitted answers are long; this test is about the refusals
    const retryAfterMs = Number(refusal!.headers.get('retry-after-ms'))
    expect(retryAfterMs).toBeGreaterThan(0)
    expect(Number(refusal!.headers.get('retry-after'))).toBe(Math.max(1, Math.ceil(retryAfterMs / 1000)))
    expect(refusal!.headers.get('ratelimit-policy')).toMatch(/"user-concurrency";q=2/)
    expect(body).toMatchObject({ error: { code: 'concurrency_limit_exceeded', type: 'rate_limit_error' } })
  })

  it('stops cleanly on SIGINT', async () => {
    child.kill('SIGINT')
    const [code] = (await once(child, 'exit')) as [number | null]
    expect(code).toBe(0)
  })
})
