// The upstream of one `pnpm bench compare` strategy: its simulator, in a process of its own.
// Qwen stamps a request's arrival on its own machines, whatever the caller's event loop is doing. A
// simulator inside the strategy's process stamped it only when that process's loop got to the socket:
// after a send was written, the strategy's own work (answers, JSON, timers) and the machine's other
// processes delayed the stamp by up to 64 ms (p99 26 ms, session 18: six strategies on two cores), so
// ten sends written more than a second apart could be stamped inside one second and refused. Here the
// stamp waits only for this small process. It runs on the worker's clock (the same virtual-clock
// environment, imported first) and records, for the chart and the arrival lag, when it had each whole
// chat request, the worker's call number (the `x-bench-call` header, added on the worker's side) and
// whether it accepted it.
import { epoch } from './_virtual-clock.js'
import { subscribe } from 'node:diagnostics_channel'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { countPromptTokens, startSimulator, type SimulatorOptions, type SimulatorStats } from '@qwen-guard/simulator'
import type { Arrived } from './_compare-chart.js'

/** A whole chat request as the simulator had it: `call` is the worker's number for it (-1 if none). */
export interface Stamped extends Arrived {
  call: number
}

export type ToUpstream =
  | { type: 'start'; options: SimulatorOptions }
  | { type: 'clock'; startAt: number }
  | { type: 'finish' }
export type FromUpstream =
  | { type: 'listening'; url: string }
  | { type: 'finished'; stats: SimulatorStats; stamped: Stamped[] }

async function serve(options: SimulatorOptions) {
  const sim = await startSimulator(options)
  let startAt = Infinity
  const stamped: Stamped[] = []
  subscribe('http.server.request.start', (message) => {
    const { request, response, server } = message as {
      request: IncomingMessage
      response: ServerResponse
      server: Server
    }
    if ((server.address() as { port: number } | null)?.port !== sim.port) return
    if (request.method !== 'POST' || !request.url?.endsWith('/chat/completions')) return
    const chunks: Buffer[] = []
    let t = NaN
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => (t = epoch() - startAt))
    response.once('finish', () => {
      let tokens = 0
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          messages: { role: string; content: string }[]
          max_tokens?: number
        }
        tokens = countPromptTokens(body.messages) + (body.max_tokens ?? 0)
      } catch {
        // an unreadable body is charged nothing by the simulator either
      }
      const call = Number(request.headers['x-bench-call'] ?? -1)
      stamped.push({ t, accepted: response.statusCode < 300, tokens, call: Number.isInteger(call) ? call : -1 })
    })
  })
  process.on('message', (m: ToUpstream) => {
    if (m.type === 'clock') startAt = m.startAt
    if (m.type === 'finish') {
      const stats = sim.stats()
      void sim
        .close()
        .then(() => process.send!({ type: 'finished', stats, stamped } satisfies FromUpstream, () => process.exit(0)))
    }
  })
  process.send!({ type: 'listening', url: sim.url } satisfies FromUpstream)
}

if (process.send) {
  process.once('message', (m: ToUpstream) => {
    if (m.type === 'start') void serve(m.options)
  })
  process.once('disconnect', () => process.exit(0)) // the worker went away: so does its upstream
}
