// A compressed stream (transport.ts decodes it) ended while its decoder is mid-stream, by the caller's
// abort or by upstream.streamIdleMs, on both transports: the upstream socket closes, the call settles
// once and its lease comes back.
import zlib from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createGuard } from '../src/guard.js'
import type { GuardEvent } from '../src/types.js'
import { chunkEvent, startUpstreamStub, type UpstreamStub } from './upstream-stub.js'

let stub: UpstreamStub
beforeAll(async () => {
  stub = await startUpstreamStub()
})
afterAll(() => stub.close())
const body = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hello there' }] }

function guardWith(fetch: typeof globalThis.fetch | undefined, streamIdleMs = 30_000) {
  const events: GuardEvent[] = []
  const guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'acct-secret-id', apiKey: 'sk-wire-0123456789' }],
      rampUp: false,
      maxAttempts: 1,
      streamIdleMs,
      ...(fetch ? { fetch } : {}),
    },
    quotas: { user: { tpm: 100_000, concurrency: 1 } },
  })
  guard.on('settled', (e) => events.push(e))
  return { guard, settledCount: () => events.filter((e) => e.type === 'settled').length }
}

function endlessGzipStream(onClose: () => void) {
  stub.handle = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' })
    const gzip = zlib.createGzip()
    gzip.pipe(res)
    res.on('close', onClose)
    gzip.write(chunkEvent('Hel'))
    gzip.flush(zlib.constants.Z_SYNC_FLUSH)
    gzip.write('data: {"partial') // an event cut inside the decoder's window, never finished
    gzip.flush(zlib.constants.Z_SYNC_FLUSH)
  }
}

describe.each([
  ['undici', undefined],
  ['fetch', ((u, o) => fetch(u, o)) as typeof fetch],
] as const)('via %s', (_name, appFetch) => {
  it('the caller aborts mid gzip stream: upstream socket closed, settled once, lease released', async () => {
    let closed = false
    endlessGzipStream(() => (closed = true))
    const { guard, settledCount } = guardWith(appFetch)
    const controller = new AbortController()
    const stream = await guard
      .client({ user: 'u' })
      .chat.completions.create({ ...body, stream: true }, { signal: controller.signal })
    const contents: string[] = []
    const read = (async () => {
      for await (const chunk of stream) {
        contents.push(chunk.choices[0]?.delta?.content ?? '')
        controller.abort()
      }
    })()
    await read.catch(() => undefined)
    await vi.waitFor(() => expect(closed).toBe(true), { timeout: 3000 })
    await vi.waitFor(() => expect(settledCount()).toBe(1))
    // concurrency 1: the next call is admitted only if the lease went back
    let closed2 = false
    endlessGzipStream(() => (closed2 = true))
    const again = await guard.client({ user: 'u' }).chat.completions.create({ ...body, stream: true })
    await again.controller.abort()
    await vi.waitFor(() => expect(closed2).toBe(true), { timeout: 3000 })
    await new Promise((r) => setTimeout(r, 100))
    expect(settledCount()).toBe(2)
    await guard.close()
  })

  it('stream idle while the decoder holds a partial event: error to the caller without secrets, socket closed', async () => {
    let closed = false
    endlessGzipStream(() => (closed = true))
    const { guard, settledCount } = guardWith(appFetch, 300)
    const stream = await guard.client({ user: 'u' }).chat.completions.create({ ...body, stream: true })
    const err = await (async () => {
      for await (const _ of stream) void _
    })().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeDefined()
    expect(JSON.stringify({ m: (err as Error).message, e: (err as { error?: unknown }).error })).not.toMatch(
      /sk-wire|acct-secret|\.ts:\d/,
    )
    await vi.waitFor(() => expect(closed).toBe(true), { timeout: 3000 })
    await vi.waitFor(() => expect(settledCount()).toBe(1))
    await guard.close()
  })
})
