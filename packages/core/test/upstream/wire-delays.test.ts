// The end of a send's sample as undici (Node's fetch) reports it (wire-delays.ts), with real fetch
// calls to a loopback server: a body that takes long to write is measured up to its last byte, and
// a request to another origin or a send through a fetch that reports nothing is sampled at the next
// turn instead.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SendDelays } from '../../src/upstream/send-delays.js'
import { watchWireDelays } from '../../src/upstream/wire-delays.js'

let server: Server
let base: string

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume()
    req.on('end', () => res.end('{}'))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

/** A body whose last chunk comes `ms` after the request starts. */
function slowBody(ms: number): ReadableStream<Uint8Array> {
  return new ReadableStream({
    async start(controller) {
      controller.enqueue(new TextEncoder().encode('{"a":'))
      await new Promise((r) => setTimeout(r, ms))
      controller.enqueue(new TextEncoder().encode('1}'))
      controller.close()
    },
  })
}

async function send(delays: SendDelays, url: string, body: BodyInit | ReadableStream<Uint8Array>) {
  delays.sent(delays.now())
  const init = { method: 'POST', body, duplex: 'half' } as RequestInit
  await (await fetch(url, init)).text()
}

describe("watchWireDelays (undici's request, the guard's default transport)", () => {
  it('a send is measured until undici has written its whole body', async () => {
    const delays = new SendDelays({ warmUp: 0, refreshMs: 0 })
    const stop = watchWireDelays(base, delays)
    const post = async (body: string | Readable) => {
      delays.sent(delays.now())
      await (await request(`${base}/v1/chat`, { method: 'POST', body })).body.text()
    }
    try {
      await post('{"a":1}')
      await post('{"a":1}')
      await post(Readable.from(slowChunks(300)))
      expect(delays.allowanceMs()).toBeGreaterThanOrEqual(250) // the body took 300 ms; 50 ms of room for a busy machine
    } finally {
      stop()
    }
  })
})

async function* slowChunks(ms: number): AsyncGenerator<Buffer> {
  yield Buffer.from('{"a":')
  await new Promise((r) => setTimeout(r, ms))
  yield Buffer.from('1}')
}

describe('watchWireDelays (real fetch, loopback)', () => {
  it('a send is measured until undici has written its whole body', async () => {
    const delays = new SendDelays({ warmUp: 0, refreshMs: 0 })
    const stop = watchWireDelays(base, delays)
    try {
      await send(delays, `${base}/v1/chat`, '{"a":1}') // the connection is opened here: measured too
      await send(delays, `${base}/v1/chat`, '{"a":1}')
      await send(delays, `${base}/v1/chat`, slowBody(300))
      // p99 (the slow send) - min (a quick send on the open connection) + 1: the 300 ms are in it (50 ms of room for a busy machine).
      expect(delays.allowanceMs()).toBeGreaterThanOrEqual(250)
    } finally {
      stop()
    }
  })

  it('requests to another origin, or after the watch stopped, are not taken for the send', async () => {
    const delays = new SendDelays({ warmUp: 0, refreshMs: 0 })
    const stop = watchWireDelays('http://127.0.0.1:1/v1', delays) // not the server's origin
    try {
      await send(delays, `${base}/v1/chat`, slowBody(150))
      await send(delays, `${base}/v1/chat`, '{"a":1}')
    } finally {
      stop()
    }
    // Both sampled at the next turn after fetch() was called: neither waited for its body.
    expect(delays.allowanceMs()).toBeLessThan(100)
    const watched = new SendDelays({ warmUp: 0, refreshMs: 0 })
    watchWireDelays(base, watched)() // stopped at once
    await send(watched, `${base}/v1/chat`, slowBody(150))
    await send(watched, `${base}/v1/chat`, '{"a":1}')
    expect(watched.allowanceMs()).toBeLessThan(100)
  })
})
