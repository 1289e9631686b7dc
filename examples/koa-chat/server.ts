/**
 * The Koa twin of the chat backend, in one file: `@qwen-guard/koa` mounted as middleware, a small
 * chat route using `ctx.qwen`, and the OpenAI-compatible relay at /v1. With no configuration it
 * answers from the embedded Qwen simulator; DASHSCOPE_API_KEY (and QWEN_BASE_URL) switch to Qwen.
 *
 *   pnpm start:koa
 *   curl -s localhost:3001/chat -H 'content-type: application/json' -d '{"message":"hello"}'
 *   curl -sN localhost:3001/chat?stream=1 -H 'content-type: application/json' -d '{"message":"hello"}'
 */
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import Koa, { type Context } from 'koa'
import { qwenGuard } from '@qwen-guard/koa'
import { safeErrorLine, type UpstreamOptions } from '@qwen-guard/core'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'

const MODEL = 'qwen3-max'
/** What Koa reports when a client leaves mid-answer (app.on('error') below). */
const CLIENT_LEFT = new Set(['ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET', 'EPIPE'])
const MAX_BODY_BYTES = 64 * 1024

function fail(message: string): never {
  console.error(`qwen-guard koa example: ${message}`)
  process.exit(1)
}

/** PORT (default 3001, so it can run beside the Express example), DASHSCOPE_API_KEY, QWEN_BASE_URL. */
function readEnv(): { port: number; apiKey?: string; baseURL?: string } {
  const rawPort = process.env.PORT?.trim() || '3001'
  if (!/^\d{1,5}$/.test(rawPort) || Number(rawPort) > 65535)
    fail(`PORT must be a whole number from 0 to 65535, got "${rawPort}"`)
  const apiKey = process.env.DASHSCOPE_API_KEY?.trim() || undefined
  const baseURL = process.env.QWEN_BASE_URL?.trim() || undefined
  if (baseURL && !apiKey)
    fail('QWEN_BASE_URL is set but DASHSCOPE_API_KEY is not: set both, or neither to use the simulator')
  if (baseURL && !/^https?:\/\//.test(baseURL)) fail('QWEN_BASE_URL must start with http:// or https://')
  try {
    if (baseURL) new URL(baseURL)
  } catch {
    fail('QWEN_BASE_URL is not a valid URL')
  }
  return { port: Number(rawPort), ...(apiKey ? { apiKey } : {}), ...(baseURL ? { baseURL } : {}) }
}

/** Reads a small JSON body without a body-parser dependency; oversized or broken bodies get a 4xx. */
async function readJson(ctx: Context): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) ctx.throw(413, 'body too large')
    chunks.push(chunk)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    return ctx.throw(400, 'body must be JSON')
  }
}

/** POST /chat {"message": "..."}: one guarded answer, as JSON or (with ?stream=1) as plain streamed text. */
async function chat(ctx: Context): Promise<void> {
  const body = (await readJson(ctx)) as { message?: unknown }
  if (typeof body.message !== 'string' || !body.message.trim()) ctx.throw(400, 'message must be a non-empty string')
  const messages = [{ role: 'user' as const, content: body.message }]

  if (ctx.query.stream) {
    // A refusal throws here, before the body starts; the guard middleware answers it with 429 + Retry-After.
    const { data: stream, response } = await ctx.qwen.chat.completions
      .create({ model: MODEL, messages, max_tokens: 256, stream: true })
      .withResponse()
    ctx.set('content-type', 'text/plain; charset=utf-8')
    ctx.set('x-qwen-guard-model', response.headers.get('x-qwen-guard-model') ?? MODEL)
    // Koa pipes a Readable; when the client goes away it destroys it, which ends the loop below and
    // with it the upstream stream, so the guard settles the call and frees its concurrency lease.
    ctx.body = Readable.from(
      (async function* () {
        for await (const chunk of stream) {
          const text = chunk.choices[0]?.delta?.content
          if (text) yield text
        }
      })(),
    )
    return
  }

  const completion = await ctx.qwen.chat.completions.create({ model: MODEL, messages, max_tokens: 256 })
  ctx.body = {
    model: completion.model, // the fallback that answered when qwen3-max was saturated
    answer: completion.choices[0]?.message.content ?? '',
    usage: completion.usage,
  }
}

async function main(): Promise<void> {
  const env = readEnv()
  let simulator: Simulator | undefined
  let upstream: UpstreamOptions
  if (env.apiKey) {
    upstream = { apiKey: env.apiKey, ...(env.baseURL ? { baseURL: env.baseURL } : {}) }
  } else {
    simulator = await startSimulator({
      port: 0,
      ttftMs: 300,
      perTokenMs: 20,
      limits: { 'qwen3-max': { rpm: 12, rps: 1, tpm: 20_000, tps: 2_000 } },
    })
    upstream = { baseURL: simulator.url, apiKey: 'sk-sim' }
  }

  const guard = qwenGuard({
    upstream,
    // The simulator's scarce qwen3-max is mirrored here so the guard paces under it and falls back.
    models: {
      [MODEL]: {
        ...(simulator ? { rpm: 12, rps: 1, tpm: 20_000, tps: 2_000 } : {}),
        fallback: ['qwen-plus', 'qwen-flash'],
      },
    },
    // Identity: the default, the client's address (IPv6 grouped by /64), never a client header.
    quotas: { user: { rpm: 10, tpm: 8_000, concurrency: 2 } },
  })

  const app = new Koa()
  // Koa reports a client that leaves a streamed answer as an error (its pipe's
  // ERR_STREAM_PREMATURE_CLOSE, a reset connection's ECONNRESET), and its default handler prints the
  // stack. A client leaving is no error; anything else is one line, no stack.
  app.on('error', (error: NodeJS.ErrnoException, ctx?: Context) => {
    if (ctx && !ctx.res.writableFinished && ctx.req.socket?.destroyed && CLIENT_LEFT.has(error.code ?? '')) return
    console.error(`qwen-guard koa example: ${ctx ? `${ctx.method} ${ctx.path}: ` : ''}${safeErrorLine(error)}`)
  })
  app.use(guard) // ctx.qwen; a QwenGuardError thrown further down becomes 429/503 + Retry-After
  app.use(guard.proxy({ prefix: '/v1' })) // OpenAI-compatible relay: POST /v1/chat/completions, GET /v1/models
  app.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/chat') return chat(ctx)
    if (ctx.method === 'GET' && ctx.path === '/quota') {
      ctx.body = await guard.guard.state(ctx.qwenIdentity)
      return
    }
    if (ctx.method === 'GET' && ctx.path === '/') {
      ctx.body =
        'qwen-guard Koa example: POST /chat {"message":"..."} (add ?stream=1 to stream), GET /quota, OpenAI relay at /v1\n'
      return
    }
    await next()
  })

  const server = app.listen(env.port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new Error(`PORT ${env.port} is already in use: set PORT`) : error),
    )
  }).catch(async (error: Error) => {
    await guard.close()
    await simulator?.close()
    fail(error.message)
  })
  const { port } = server.address() as AddressInfo
  console.log(`qwen-guard Koa example on http://127.0.0.1:${port}/ (${simulator ? 'embedded simulator' : 'Qwen'})`)
  console.log(`  curl -s localhost:${port}/chat -H 'content-type: application/json' -d '{"message":"hello"}'`)
  console.log(`  OpenAI-compatible relay: http://127.0.0.1:${port}/v1   (Ctrl-C to stop)`)

  const stop = async () => {
    console.log('\nstopping')
    server.closeIdleConnections()
    const forced = setTimeout(() => server.closeAllConnections(), 3_000)
    forced.unref()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await guard.close()
    await simulator?.close()
    process.exit(0)
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main().catch((error: unknown) => {
  console.error(`qwen-guard koa example failed to start: ${safeErrorLine(error)}`)
  process.exit(1)
})
