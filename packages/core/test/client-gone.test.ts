/** client-gone.ts: the relay's cancellation, on real sockets. */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { clientGoneSignal } from '../src/client-gone.js'

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
