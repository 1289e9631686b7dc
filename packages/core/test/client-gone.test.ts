/** client-gone.ts: the relay's cancellation, on real sockets. */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { clientGoneSignal, connectionGoneSignal, isClientGone } from '../src/client-gone.js'

let server: http.Server | undefined
afterEach(async () => {
  server?.closeAllConnections()
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))
  server = undefined
})

/** A server whose handler reads the whole body, waits `delayMs`, then hands req/res to the test. */
async function serve(
  delayMs: number,
): Promise<{ port: number; next: Promise<{ req: IncomingMessage; res: ServerResponse }> }> {
  let handed!: (value: { req: IncomingMessage; res: ServerResponse }) => void
  const next = new Promise<{ req: IncomingMessage; res: ServerResponse }>((resolve) => (handed = resolve))
  server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => setTimeout(() => handed({ req, res }), delayMs))
  })
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as AddressInfo).port, next }
}

const post = 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc'

describe('clientGoneSignal', () => {
  it('stays quiet for a client that waits, its body already read (the request itself is destroyed then)', async () => {
    const { port, next } = await serve(30)
    const answer = fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: 'abc' })
    const { req, res } = await next
    expect(req.destroyed).toBe(true) // Node's own: why the signal does not look at the request
    const signal = clientGoneSignal(res)
    expect(signal.aborted).toBe(false)
    res.end('ok')
    expect(await (await answer).text()).toBe('ok')
    await new Promise((resolve) => setImmediate(resolve))
    expect(signal.aborted).toBe(false)
  })

  it('aborts at once for a client that left before the signal was made', async () => {
    const { port, next } = await serve(100)
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(post)
      setTimeout(() => socket.destroy(), 20)
    })
    const { res } = await next
    expect(clientGoneSignal(res).aborted).toBe(true)
  })

  it('aborts when the client leaves later', async () => {
    const { port, next } = await serve(0)
    const socket = net.connect(port, '127.0.0.1', () => socket.write(post))
    const { res } = await next
    const signal = clientGoneSignal(res)
    expect(signal.aborted).toBe(false)
    const aborted = new Promise((resolve) => signal.addEventListener('abort', resolve))
    socket.destroy()
    await aborted
    expect(signal.aborted).toBe(true)
  })
})

describe('a pipelined request waiting for its turn (its response has no socket yet)', () => {
  it.each([
    ['clientGoneSignal', clientGoneSignal],
    ['connectionGoneSignal', connectionGoneSignal],
  ])('%s aborts when its client leaves', async (_name, signalOf) => {
    const seen: Array<{ res: ServerResponse; signal: AbortSignal; hadSocket: boolean }> = []
    server = http.createServer((req, res) => {
      req.resume()
      seen.push({ res, signal: signalOf(res), hadSocket: res.socket !== null }) // the first is never answered
    })
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    const socket = net.connect(port, '127.0.0.1', () => socket.write(post + post))
    await vi.waitFor(() => expect(seen).toHaveLength(2))
    const waiting = seen[1]!
    expect(waiting.hadSocket).toBe(false)
    expect(waiting.signal.aborted).toBe(false)
    const aborted = new Promise((resolve) => waiting.signal.addEventListener('abort', resolve))
    socket.destroy()
    await aborted
    expect(waiting.signal.reason).toMatchObject({ name: 'ClientGoneError' })
    expect(seen[0]!.signal.aborted).toBe(true)
    // The adapters' error handling reads the call's error as its own client gone, for either request.
    expect(isClientGone(new Error('call failed', { cause: waiting.signal.reason }), waiting.res)).toBe(true)
    expect(isClientGone(seen[0]!.signal.reason, seen[0]!.res)).toBe(true)
  })
})

describe('connectionGoneSignal', () => {
  /** A keep-alive server handing each request's signal to the test, answering at once unless `hold`. */
  async function keepAlive(hold = false) {
    const signals: AbortSignal[] = []
    const held: ServerResponse[] = []
    server = http.createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        signals.push(connectionGoneSignal(res))
        if (hold) held.push(res)
        else res.end('ok')
      })
    })
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
    return { port: (server.address() as AddressInfo).port, signals, held }
  }

  it('is one signal for every request of a connection, never aborted by answers that finished', async () => {
    const { port, signals } = await keepAlive()
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      for (let i = 0; i < 5; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.request({ port, host: '127.0.0.1', method: 'POST', agent }, (res) => {
            res.resume()
            res.on('end', () => resolve(res.statusCode ?? 0))
          })
          req.on('error', reject)
          req.end('abc')
        })
        expect(status).toBe(200)
      }
      expect(signals).toHaveLength(5)
      expect(new Set(signals).size).toBe(1)
      expect(signals[0]!.aborted).toBe(false)
    } finally {
      agent.destroy()
    }
  })

  it('aborts with a ClientGoneError when the client leaves while its request is answered', async () => {
    const { port, signals, held } = await keepAlive(true)
    const socket = net.connect(port, '127.0.0.1', () => socket.write(post))
    await vi.waitFor(() => expect(signals).toHaveLength(1))
    const signal = signals[0]!
    expect(signal.aborted).toBe(false)
    const aborted = new Promise((resolve) => signal.addEventListener('abort', resolve))
    socket.destroy()
    await aborted
    expect(signal.reason).toMatchObject({ name: 'ClientGoneError' })
    expect(isClientGone(signal.reason, held[0]!)).toBe(true)
  })

  it("is the request's own clientGoneSignal for an answer already finished", async () => {
    const { port, next } = await serve(0)
    const answer = fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: 'abc' })
    const { res } = await next
    res.end('ok')
    await (await answer).text()
    expect(res.writableFinished).toBe(true)
    const late = connectionGoneSignal(res)
    expect(late.aborted).toBe(false)
    expect(connectionGoneSignal(res)).not.toBe(late)
  })
})
