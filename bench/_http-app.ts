// The apps measured by `pnpm bench http`, in their own process (bench/http.ts starts it and sends
// the load from another). Every variant listens on its own loopback port; the line
// `READY {json}` on stdout names them. SIM_URL is the simulator, REDIS_URL an empty redis-server.
// `control` is not a variant: GET on it answers this process's CPU time so far (`process.cpuUsage()`,
// user + system, in µs) and its event-loop utilization, so bench/http.ts can charge each variant the
// CPU the app spent while it was the only one under load; GET on `control?pauses` answers the GC
// pauses and event-loop delay since the last such reading (and starts over); `control?alloc=start`
// starts V8's sampling heap profiler (every object allocated, or with `&kept` only those that
// outlived a young-generation collection) and `control?alloc=stop` answers the bytes it saw.
import { once } from 'node:events'
import { Session } from 'node:inspector/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { constants as perfConstants, monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks'
import express from 'express'
import Koa from 'koa'
import { createNodeRelay } from '../packages/core/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'
import { rateLimit } from 'express-rate-limit'
import { Redis } from 'ioredis'
import { request } from 'undici'
import OpenAI from 'openai'
import type { GuardOptions } from '../packages/core/src/index.js'
import { qwenGuard } from '../packages/express/src/index.js'

const simUrl = process.env.SIM_URL ?? ''
const redisUrl = process.env.REDIS_URL ?? ''
const KEY = 'sk-sim'

/** The one call every Qwen route makes: a short chat, the simulator's default completion length. */
export const CHAT = {
  model: 'qwen-plus',
  messages: [{ role: 'user' as const, content: 'Write a haiku about rate limits.' }],
}

/** Limits far above the load, so every call is admitted but every dimension is still counted. */
function options(store?: GuardOptions['store']): GuardOptions {
  return {
    upstream: { baseURL: simUrl, apiKey: KEY, rampUp: false, safetyMargin: 1 },
    models: { 'qwen-plus': { rpm: 1_000_000_000, tpm: 1_000_000_000_000 } },
    quotas: { user: { rpm: 100_000_000, tpm: 100_000_000_000 } },
    queue: { maxSize: 100_000 },
    // The guard sends its reservation cap as max_tokens when a request sets none, and the simulator
    // answers exactly max_tokens tokens when set (64 when not): with the default cap (1,024) every
    // guarded or relayed call got a 16x longer answer than the plain or direct one it is compared with.
    defaultMaxTokens: 64,
    ...(store ? { store } : {}),
  }
}

async function serve(app: express.Express): Promise<string> {
  const server: Server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const ping = (_req: express.Request, res: express.Response) => void res.send('pong')

const plain = new OpenAI({ baseURL: simUrl, apiKey: KEY, maxRetries: 0 })
const memory = qwenGuard(options())
const redis = redisUrl ? qwenGuard(options({ redis: new Redis(redisUrl), prefix: 'bench' })) : undefined

// For scale: express-rate-limit's built-in memory store, one counter (keyed by client IP, so a
// single key here) incremented per request; the limit is far above the load, so nothing is refused.
const perRequestLimit = rateLimit({
  windowMs: 60_000,
  limit: 1_000_000_000,
  standardHeaders: 'draft-8',
  legacyHeaders: false,
})

const chatVia = (client: (req: express.Request) => OpenAI) => async (req: express.Request, res: express.Response) => {
  res.json(await client(req).chat.completions.create(CHAT))
}

// Where a latency tail can come from, in this process: garbage-collection pauses (each one stops
// the event loop) and event-loop delay (how late a 1 ms timer fires: any long synchronous stretch,
// GC included). Read and reset with GET <control>?pauses.
const gc = { count: 0, totalMs: 0, maxMs: 0, over1ms: 0, minor: 0 }
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gc.count++
    const { detail } = entry as PerformanceEntry & { detail?: { kind?: number } }
    if (detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) gc.minor++
    gc.totalMs += entry.duration
    gc.maxMs = Math.max(gc.maxMs, entry.duration)
    if (entry.duration > 1) gc.over1ms++
  }
}).observe({ entryTypes: ['gc'] })
const loopDelay = monitorEventLoopDelay({ resolution: 1 })
loopDelay.enable()

/**
 * Bytes allocated, measured by V8's sampling heap profiler (a sample per 1 KiB allocated on average;
 * objects later collected by either GC included, or with `kept` those a young-generation collection
 * freed left out: what outlived one and had to be copied).
 */
const inspector = new Session()
inspector.connect()
async function allocation(action: string, kept: boolean): Promise<{ bytes: number }> {
  if (action === 'start') {
    await inspector.post('HeapProfiler.enable')
    await inspector.post('HeapProfiler.startSampling', {
      samplingInterval: 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: !kept,
    })
    return { bytes: 0 }
  }
  const { profile } = await inspector.post('HeapProfiler.stopSampling')
  const total = (node: typeof profile.head): number =>
    node.selfSize + node.children.reduce((sum, child) => sum + total(child), 0)
  return { bytes: total(profile.head) }
}

/** Loopback only, plain node:http (no Express), so a reading costs a few µs, not a variant's worth. */
async function control(): Promise<string> {
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    const alloc = /[?&]alloc=(start|stop)/.exec(req.url ?? '')
    if (alloc) {
      void allocation(alloc[1]!, req.url!.includes('&kept')).then((result) => res.end(JSON.stringify(result)))
      return
    }
    if (req.url?.endsWith('?pauses')) {
      const ms = (ns: number) => ns / 1e6
      res.end(
        JSON.stringify({
          gc: { ...gc },
          loopDelayMs: { p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max) },
        }),
      )
      Object.assign(gc, { count: 0, totalMs: 0, maxMs: 0, over1ms: 0, minor: 0 })
      loopDelay.reset()
      return
    }
    const { user, system } = process.cpuUsage()
    const { idle, active } = performance.eventLoopUtilization()
    res.end(JSON.stringify({ cpuMicros: user + system, user, system, loopIdleMs: idle, loopActiveMs: active }))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const nodeRelay = createNodeRelay(memory.guard, { prefix: '/v1' })

/**
 * The floor: a proxy with nothing of the guard, written as small as a Node proxy gets. It reads the
 * request, POSTs it to the simulator with undici's `request` (the guard's transport), reads the answer
 * as text and writes it back. What any Node hop in this place adds, on this machine.
 */
const proxyFloor = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  const answer = await request(`${simUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: Buffer.concat(chunks),
  })
  const text = await answer.body.text()
  res.writeHead(answer.statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
  })
  res.end(text)
}

const urls = {
  control: await control(),
  bare: await serve(express().get('/ping', ping)),
  mounted: await serve(express().use(memory).get('/ping', ping)),
  // The floor: what any one middleware costs in Express, whatever it does.
  emptyMiddleware: await serve(
    express()
      .use((_req, _res, next) => next())
      .get('/ping', ping),
  ),
  plainCall: await serve(
    express().get(
      '/chat',
      chatVia(() => plain),
    ),
  ),
  guardedMemory: await serve(
    express()
      .use(memory)
      .get(
        '/chat',
        chatVia((req) => req.qwen),
      )
      .use(memory.errors),
  ),
  guardedRedis: redis
    ? await serve(
        express()
          .use(redis)
          .get(
            '/chat',
            chatVia((req) => req.qwen),
          )
          .use(redis.errors),
      )
    : '',
  rateLimited: await serve(
    express()
      .use(perRequestLimit)
      .get(
        '/chat',
        chatVia(() => plain),
      ),
  ),
  relay: await serve(express().use('/v1', memory.proxy())),
  relayKoa: await listen(createServer(new Koa().use(koaGuard(memory.guard).proxy()).callback())),
  // The relay before any framework: createNodeRelay in a plain node:http listener.
  relayNodeHttp: await listen(createServer((req, res) => void nodeRelay(req, res))),
  proxyFloor: await listen(createServer((req, res) => void proxyFloor(req, res))),
  // The same floor mounted in Express: what Express itself adds to a relayed call.
  proxyFloorExpress: await serve(express().use('/v1', (req, res) => void proxyFloor(req, res))),
}
console.log(`READY ${JSON.stringify(urls)}`)
