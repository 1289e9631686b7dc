// A hostile Qwen stand-in on loopback for the call-path suites (not a test file itself): each test
// sets `handle` to answer however it likes, cut connections included. Real sockets, real fetch.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

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
