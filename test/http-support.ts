/**
 * Shared fixtures of the HTTP suites: a simulator with secret-looking credentials, guard options
 * pointing at it, Express and Koa apps mounting the adapters, and a tap that records every response
 * the apps send so a suite can assert at the end that no key or account id ever left the server.
 */
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, request as httpRequest, type RequestListener, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import {
  createGuard,
  createNodeRelay,
  type Guard,
  type GuardOptions,
  type QuotaPolicies,
} from '../packages/core/src/index.js'
import { qwenGuard as expressGuard, type QwenGuardMiddleware } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard, type QwenGuardKoaMiddleware } from '../packages/koa/src/index.js'
import { startSimulator, type Simulator, type SimulatorOptions } from '../packages/simulator/src/index.js'
import express from 'express'
import Koa from 'koa'
import type OpenAI from 'openai'
import { afterAll, afterEach, beforeAll, expect } from 'vitest'

/** Credentials that must never appear in anything the apps answer. */
/** How the guard keys an identity's `key` (identity.ts): `sha256:` and its SHA-256 in base64url. */
export const keyedBy = (key: string): string => `sha256:${createHash('sha256').update(key).digest('base64url')}`

export const SECRETS = { key: 'sk-e2e-secret-key-7f3a91', account: 'acct-e2e-hidden-9b2c' } as const

export function startSecretSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  return startSimulator({ accounts: [{ id: SECRETS.account, keys: [SECRETS.key] }], ...options })
}

/**
 * A secret-credential simulator and a guard on it for one test file: started before its tests, closed
 * after them. The guard is read through the returned function (it exists once the file started).
 */
export function simulatorGuardForFile(options: SimulatorOptions = { burst: false }): () => Guard {
  let sim: Simulator | undefined
  let guard: Guard | undefined
  beforeAll(async () => {
    sim = await startSecretSimulator(options)
    guard = createGuard(guardOptions(sim))
  })
  afterAll(async () => {
    await guard?.close()
    await sim?.close()
  })
  return () => guard!
}

/** Streams a short answer (qwen-plus, 5 tokens) through `client` and returns its text. */
export async function streamedText(
  client: OpenAI,
  messages: OpenAI.Chat.ChatCompletionMessageParam[],
): Promise<string> {
  const stream = await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 5, stream: true })
  let text = ''
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
  return text
}

/** Guard options against `sim`; tests name their user with an `x-user` header (read by `identify`). */
export function guardOptions(sim: Simulator, quotas?: QuotaPolicies, extra: Partial<GuardOptions> = {}): GuardOptions {
  return {
    upstream: { baseURL: sim.url, accounts: [{ id: SECRETS.account, apiKey: SECRETS.key }] },
    ...(quotas ? { quotas } : {}),
    ...extra,
  }
}

export interface Captured {
  method: string
  url: string
  status: number
  headers: string
  body: string
}

/** Records every response written through the listeners it wraps. */
export class ResponseTap {
  readonly captured: Captured[] = []

  wrap(listener: RequestListener): RequestListener {
    return (req, res) => {
      const chunks: Buffer[] = []
      const keep = (chunk: unknown) => {
        if (typeof chunk === 'string' || chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk))
      }
      const write = res.write.bind(res) as (...args: unknown[]) => boolean
      const end = res.end.bind(res) as (...args: unknown[]) => typeof res
      res.write = ((chunk: unknown, ...rest: unknown[]) => {
        keep(chunk)
        return write(chunk, ...rest)
      }) as typeof res.write
      res.end = ((chunk?: unknown, ...rest: unknown[]) => {
        keep(chunk)
        return end(chunk, ...rest)
      }) as typeof res.end
      res.once('close', () => {
        this.captured.push({
          method: req.method ?? '',
          url: req.url ?? '',
          status: res.statusCode,
          headers: JSON.stringify(res.getHeaders()),
          body: Buffer.concat(chunks).toString('utf8'),
        })
      })
      listener(req, res)
    }
  }

  /** Fails when any recorded response names an upstream key or account id. */
  assertNoSecrets(): void {
    expect(this.captured.length).toBeGreaterThan(0)
    for (const response of this.captured) {
      for (const secret of Object.values(SECRETS)) {
        expect(response.headers, `${response.method} ${response.url} headers`).not.toContain(secret)
        expect(response.body, `${response.method} ${response.url} body`).not.toContain(secret)
      }
      expect(response.headers).not.toMatch(/authorization/i)
    }
  }
}

export interface Running {
  url: string
  server: Server
  close(): Promise<void>
}

/** Listens on a free loopback port. */
export async function listen(listener: RequestListener): Promise<Running> {
  const server = createServer(listener)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * GETs `url`: resolves its status, or the error's text when the socket died without an answer (or
 * nothing came within `timeoutMs`). `abortAfterMs`: the client leaves then (resolves 'aborted by test').
 */
export function getStatus(
  url: string,
  options: { abortAfterMs?: number; timeoutMs?: number } = {},
): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpRequest(url, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', (e) => resolve(`response error: ${e.message}`))
    })
    req.on('error', (e) => resolve(`request error: ${e.message}`))
    const timeoutMs = options.timeoutMs ?? 3_000
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.end()
    if (options.abortAfterMs !== undefined)
      setTimeout(() => {
        req.destroy()
        resolve('aborted by test')
      }, options.abortAfterMs)
  })
}

/**
 * `node`: the Express app of `express`, with the relay served in front of it by `createNodeRelay` (a
 * plain node:http listener) instead of `guard.proxy()`.
 */
export type Framework = 'express' | 'koa' | 'node'

export interface GuardedApp {
  framework: Framework
  running: Running
  /** The relay's base URL, for `new OpenAI({ baseURL })`. */
  baseURL: string
  guard: QwenGuardMiddleware | QwenGuardKoaMiddleware
  close(): Promise<void>
}

const userOf = (value: string | string[] | undefined): string =>
  (Array.isArray(value) ? value[0] : value) ?? 'anonymous'

/**
 * An app of the given framework with the guard, the relay at /v1 (64 KiB body limit) and a route
 * `POST /ask` that calls Qwen through the request's guarded client. The user is the `x-user` header.
 */
export async function startApp(framework: Framework, options: GuardOptions, tap: ResponseTap): Promise<GuardedApp> {
  const maxBodyBytes = 64 * 1024
  if (framework === 'express') {
    const guard = expressGuard({ ...options, identify: (req) => ({ user: userOf(req.headers['x-user']) }) })
    const app = express()
    app.use(guard)
    app.use('/v1', guard.proxy({ maxBodyBytes }))
    app.post('/ask', express.json(), async (req, res) => {
      res.json(await req.qwen.chat.completions.create(req.body))
    })
    app.use(guard.errors)
    const running = await listen(tap.wrap(app))
    return { framework, running, baseURL: `${running.url}/v1`, guard, close: () => closeBoth(running, guard) }
  }
  if (framework === 'node') {
    const guard = expressGuard({ ...options, identify: (req) => ({ user: userOf(req.headers['x-user']) }) })
    const app = express()
    app.use(guard)
    app.post('/ask', express.json(), async (req, res) => {
      res.json(await req.qwen.chat.completions.create(req.body))
    })
    app.use(guard.errors)
    const relay = createNodeRelay(guard.guard, {
      prefix: '/v1',
      maxBodyBytes,
      identify: (req) => ({ user: userOf(req.headers['x-user']) }),
    })
    const running = await listen(tap.wrap((req, res) => void relay(req, res, () => app(req, res))))
    return { framework, running, baseURL: `${running.url}/v1`, guard, close: () => closeBoth(running, guard) }
  }
  const guard = koaGuard({ ...options, identify: (ctx) => ({ user: userOf(ctx.headers['x-user']) }) })
  const app = new Koa()
  app.silent = true
  app.use(guard)
  app.use(guard.proxy({ prefix: '/v1', maxBodyBytes }))
  app.use(async (ctx) => {
    if (ctx.method !== 'POST' || ctx.path !== '/ask') return
    const chunks: Buffer[] = []
    for await (const chunk of ctx.req) chunks.push(chunk as Buffer)
    ctx.body = await ctx.qwen.chat.completions.create(JSON.parse(Buffer.concat(chunks).toString()))
  })
  const running = await listen(tap.wrap(app.callback()))
  return { framework, running, baseURL: `${running.url}/v1`, guard, close: () => closeBoth(running, guard) }
}

async function closeBoth(running: Running, guard: { close(): Promise<void> }): Promise<void> {
  await running.close()
  await guard.close()
}

/** Parses a Structured Field list of RateLimit / RateLimit-Policy into items and their parameters. */
export function parseRateLimitField(value: string): Array<{ name: string; params: Record<string, string> }> {
  return value.split(/,\s*/).map((item) => {
    const [name = '', ...params] = item.split(';')
    expect(name, `item name in ${value}`).toMatch(/^"[a-z0-9-]+"$/)
    const parsed: Record<string, string> = {}
    for (const param of params) {
      const match = /^([a-z]+)=("[^"]*"|\d+)$/.exec(param.trim())
      expect(match, `parameter ${param} in ${value}`).not.toBeNull()
      parsed[match![1]!] = match![2]!
    }
    return { name: name.slice(1, -1), params: parsed }
  })
}

/** Checks the refusal answer DESIGN.md specifies: 429, Retry-After = ceil(retry-after-ms / 1000) >= 1, fields, body. */
export function expectRefusal(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  body: unknown,
): void {
  expect(status).toBe(429)
  const ms = Number(headers['retry-after-ms'])
  expect(Number.isInteger(ms) && ms > 0).toBe(true)
  expect(Number(headers['retry-after'])).toBe(Math.max(1, Math.ceil(ms / 1000)))
  const current = parseRateLimitField(String(headers['ratelimit']))
  const policies = parseRateLimitField(String(headers['ratelimit-policy']))
  expect(current.length).toBeGreaterThan(0)
  for (const item of current) {
    expect(item.params).toHaveProperty('r')
    expect(item.params).toHaveProperty('t')
    expect(policies.map((policy) => policy.name)).toContain(item.name)
  }
  for (const policy of policies) {
    expect(policy.params).toHaveProperty('q')
    expect(policy.params).toHaveProperty('w')
  }
  expect(body).toMatchObject({
    error: { message: expect.any(String), type: 'rate_limit_error', code: expect.any(String), param: null },
  })
}

/** Collects the process's warnings (a MaxListenersExceededWarning, say) until `stop()`. */
export function warningsDuring(): { warnings: Error[]; stop(): void } {
  const warnings: Error[] = []
  const on = (warning: Error) => warnings.push(warning)
  process.on('warning', on)
  return { warnings, stop: () => process.off('warning', on) }
}

/**
 * What a test file opens (simulators, stubs, guards, servers): push them here and each is closed
 * after each test, the last opened first.
 */
export function closedAfterEach(): Array<{ close(): Promise<void> }> {
  const opened: Array<{ close(): Promise<void> }> = []
  afterEach(async () => {
    for (const item of opened.splice(0).reverse()) await item.close()
  })
  return opened
}
