import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { sendRelayResponse } from '../src/send-relay-response.js'

let server: http.Server | undefined
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())))

/** A relay stream that sends an event every 10 ms until cancelled, and records the cancel. */
function endlessStream(seen: { cancelled: boolean }): ReadableStream<Uint8Array> {
  let i = 0
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      controller.enqueue(new TextEncoder().encode(`data: ${i++}\n\n`))
    },
    cancel() {
      seen.cancelled = true
    },
  })
}

function listen(handler: http.RequestListener): Promise<number> {
  server = http.createServer(handler)
  return new Promise((resolve) =>
    server!.listen(0, '127.0.0.1', () => resolve((server!.address() as AddressInfo).port)),
  )
}

describe('sendRelayResponse', () => {
  it('writes a string answer with its length', async () => {
    const port = await listen(
      (_req, res) => void sendRelayResponse({ status: 201, headers: { 'x-a': '1' }, body: 'héllo' }, res),
    )
    const response = await fetch(`http://127.0.0.1:${port}/`)
    expect(response.status).toBe(201)
    expect(response.headers.get('content-length')).toBe('6')
    expect(response.headers.get('x-a')).toBe('1')
    expect(await response.text()).toBe('héllo')
  })

  it('pipes a stream to its end', async () => {
    const chunks = ['data: a\n\n', 'data: b\n\n']
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk))
        controller.close()
      },
    })
    const port = await listen(
      (_req, res) =>
        void sendRelayResponse({ status: 200, headers: { 'content-type': 'text/event-stream' }, body }, res),
    )
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe(chunks.join(''))
  })

  it('cancels the stream and settles when the client goes away mid-stream', async () => {
    const seen = { cancelled: false }
    let sent: Promise<void> | undefined
    const port = await listen((_req, res) => {
      sent = sendRelayResponse(
        { status: 200, headers: { 'content-type': 'text/event-stream' }, body: endlessStream(seen) },
        res,
      )
    })
    await new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port }, (res) => {
        let events = 0
        res.on('data', () => {
          if (++events === 3) {
            req.destroy()
            resolve()
          }
        })
      })
      req.on('error', () => undefined)
    })
    await expect(sent).resolves.toBeUndefined()
    expect(seen.cancelled).toBe(true)
  })

  it('destroys the response when the stream fails', async () => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('data: a\n\n'))
        controller.error(new Error('broken'))
      },
    })
    const port = await listen(
      (_req, res) =>
        void sendRelayResponse({ status: 200, headers: { 'content-type': 'text/event-stream' }, body }, res),
    )
    const response = await fetch(`http://127.0.0.1:${port}/`)
    await expect(response.text()).rejects.toThrow()
  })
})
