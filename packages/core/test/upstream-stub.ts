// A hostile Qwen stand-in on loopback for the call-path suites (not a test file itself): each test
// sets `handle` to answer however it likes, cut connections included. Real sockets, real fetch.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createGuard } from '../src/guard.js'
import type { Guard } from '../src/guard-types.js'
import type { GuardEvent, GuardEventType, GuardOptions } from '../src/types.js'

export type StubHandler = (req: IncomingMessage, res: ServerResponse, body: string) => unknown

export interface UpstreamStub {
  /** `http://127.0.0.1:<port>/compatible-mode/v1` */
  baseURL: string
  handle: StubHandler
  /** Requests that reached the stub. */
  requests: number
  close(): Promise<void>
}

export async function startUpstreamStub(handle: StubHandler = (_req, res) => res.end()): Promise<UpstreamStub> {
  const stub = { handle, requests: 0 } as UpstreamStub
  const server: Server = createServer((req, res) => {
    stub.requests++
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      void Promise.resolve(stub.handle(req, res, Buffer.concat(chunks).toString('utf8'))).catch(() => res.destroy())
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  stub.baseURL = `http://127.0.0.1:${port}/compatible-mode/v1`
  stub.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  return stub
}

export const chunkEvent = (content: string) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'qwen-plus', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`

export const usageEvent = (usage: unknown) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'qwen-plus', choices: [], usage })}\n\n`

export const completion = (usage: unknown, content = 'ok') =>
  JSON.stringify({
    id: 'c',
    object: 'chat.completion',
    created: 1,
    model: 'qwen-plus',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage,
  })

/** Writes an SSE head and the given parts; `end` false leaves the connection open. */
export function sse(res: ServerResponse, parts: string[], end = true): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' })
  for (const part of parts) res.write(part)
  if (end) res.end()
}

/** What `stubbedGuard` is given: the account's id and key, and what to change of its defaults. */
export interface StubbedGuardSetup {
  account: { id: string; apiKey: string }
  /** Closed by the suite after each test (the stub and the guard are pushed on it). */
  open: Array<{ close(): Promise<void> }>
  /** Events recorded into the returned `events`. */
  record: readonly GuardEventType[]
  upstream?: Partial<GuardOptions['upstream']>
  quotas?: GuardOptions['quotas']
  queue?: GuardOptions['queue']
  models?: GuardOptions['models']
}

/**
 * A guard on a fresh stub: its one account, no ramp-up, one attempt, a 5 s deadline, quotas of
 * 100,000 tpm per user unless `setup` says otherwise.
 */
export async function stubbedGuard(setup: StubbedGuardSetup): Promise<{
  stub: UpstreamStub
  guard: Guard
  events: GuardEvent[]
}> {
  const stub = await startUpstreamStub()
  setup.open.push(stub)
  const events: GuardEvent[] = []
  const guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [setup.account],
      rampUp: false,
      timeoutMs: 5_000,
      maxAttempts: 1,
      ...setup.upstream,
    },
    quotas: setup.quotas ?? { user: { tpm: 100_000 } },
    ...(setup.queue ? { queue: setup.queue } : {}),
    ...(setup.models ? { models: setup.models } : {}),
  })
  setup.open.push(guard)
  for (const type of setup.record) guard.on(type, (event) => events.push(event))
  return { stub, guard, events }
}

/**
 * A handler for rounds of random traffic: with `refusals` chance a 429 (retry after 15 ms), else
 * after up to `maxDelayMs` a JSON answer or (for a stream) three chunks up to `maxChunkGapMs` apart,
 * usage and [DONE]; a stream whose client went away is not written to any further. `rand` is the
 * round's seeded generator (a failing round can be replayed).
 */
export function chaoticHandler(
  rand: () => number,
  usage: unknown,
  { refusals, maxDelayMs, maxChunkGapMs }: { refusals: number; maxDelayMs: number; maxChunkGapMs: number },
): StubHandler {
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
  return async (_req, res, body) => {
    if (rand() < refusals) {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after-ms': '15' })
      return res.end('{"error":{"code":"limit_requests","message":"Requests rate limit exceeded"}}')
    }
    await pause(Math.floor(rand() * maxDelayMs))
    if ((JSON.parse(body) as { stream?: boolean }).stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      for (let i = 0; i < 3 && !res.destroyed; i++) {
        res.write(chunkEvent(`c${i}`))
        await pause(Math.floor(rand() * maxChunkGapMs))
      }
      if (!res.destroyed) res.end(usageEvent(usage) + 'data: [DONE]\n\n')
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(completion(usage))
  }
}
