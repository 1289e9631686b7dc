// One strategy of `pnpm bench compare`, in its own process with its own simulator (the upstream is
// another machine in real life; here it only shares this strategy's event loop, not the others').
// The parent (compare.ts) forks one worker per strategy, waits until all are ready, then sends every
// worker the same start moment; each replays the same seeded schedule from there and reports back.
// A time-scaled run forks the worker with the virtual clock's environment (_virtual-clock.ts, imported
// first so every clock of the process is scaled before anything else reads one).
import { virtualEpoch } from './_virtual-clock.js'
import { subscribe } from 'node:diagnostics_channel'
import { setMaxListeners } from 'node:events'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { countPromptTokens, startSimulator, type SimulatorStats } from '@qwen-guard/simulator'
import type { Arrived } from './_compare-chart.js'
import { makeSchedule, type Arrival } from './_compare-schedule.js'
import {
  bottleneck,
  qwenGuard,
  qwenGuardRetryAfter,
  sdkAsIs,
  seedBackoff,
  seedFallbackChain,
  seedFixedQueue,
  seedRoundRobin,
  type Lane,
  type ModelLimit,
  type Strategy,
} from './_compare-strategies.js'

export interface Setup {
  /** The requested model and its limits per account. */
  model: string
  rpm: number
  tpm: number
  /** Accounts with those limits (scenario 2). Default 1. */
  accounts?: number
  /** The model's fallbacks with their limits (scenario 3). Default none. */
  fallbacks?: ModelLimit[]
  /** Virtual ms (every clock of the worker) of load and drain. */
  loadMs: number
  drainMs: number
  users: number
  overload: number
  seed: number
}

export type ToWorker = { type: 'setup'; letter: string; setup: Setup } | { type: 'start'; startAt: number }
export type FromWorker =
  | { type: 'ready'; name: string }
  | { type: 'done'; name: string; latency: (number | null)[]; stats: SimulatorStats; arrived: Arrived[] }

export const SIM_LATENCY = { ttftMs: 400, perTokenMs: 4 }

export function scheduleOf(setup: Setup): Arrival[] {
  return makeSchedule({
    seed: setup.seed,
    users: setup.users,
    ratePerSecond: (setup.overload * setup.rpm * (setup.accounts ?? 1)) / 60,
    loadMs: setup.loadMs,
  })
}

const factories: Record<string, (lane: Lane, seed: number) => Strategy> = {
  a: sdkAsIs,
  b: seedBackoff,
  c: seedFixedQueue,
  d: bottleneck,
  e: qwenGuard,
  g: qwenGuardRetryAfter,
  r: seedRoundRobin,
  f: seedFallbackChain,
}

/** Epoch ms with sub-ms precision, comparable between processes. */
const epoch = () => performance.timeOrigin + performance.now()

async function run(letter: string, setup: Setup) {
  const make = factories[letter]
  if (!make) throw new Error(`no strategy ${letter}`)
  const schedule = scheduleOf(setup)
  const accounts = setup.accounts ?? 1
  const fallbacks = setup.fallbacks ?? []
  const keys = Array.from({ length: accounts }, (_, i) => (i === 0 ? 'sk-bench' : `sk-bench-${i}`))
  const sim = await startSimulator({
    // The first account is 'acct' (scenario 1 reads its stats by that id).
    accounts: keys.map((key, i) => ({ id: i === 0 ? 'acct' : `acct-${i}`, keys: [key] })),
    limits: Object.fromEntries([setup, ...fallbacks].map((m) => [m.model, { rpm: m.rpm, tpm: m.tpm }])),
    ...SIM_LATENCY,
  })
  const strategy = make(
    { url: sim.url, apiKey: keys[0]!, apiKeys: keys, model: setup.model, rpm: setup.rpm, tpm: setup.tpm, fallbacks },
    setup.seed,
  )

  // What the simulator saw, from its side: when it had a whole chat request and whether it accepted it.
  let startAt = Infinity
  const arrived: Arrived[] = []
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
      arrived.push({ t, accepted: response.statusCode < 300, tokens })
    })
  })

  process.send!({ type: 'ready', name: strategy.name } satisfies FromWorker)
  startAt = await new Promise<number>((resolve) =>
    process.once('message', (m: ToWorker) => m.type === 'start' && resolve(virtualEpoch(m.startAt))),
  )

  const stop = new AbortController()
  setMaxListeners(0, stop.signal) // one listener per call in flight
  const latency: (number | null)[] = new Array(schedule.length).fill(null)
  const pending: Promise<void>[] = []
  await new Promise<void>((resolve) => {
    let next = 0
    const tick = () => {
      const now = epoch() - startAt
      while (next < schedule.length && schedule[next]!.at <= now) {
        const a = schedule[next++]!
        const began = epoch()
        pending.push(strategy.send(a, stop.signal).then((ok) => void (ok && (latency[a.id] = epoch() - began))))
      }
      if (next >= schedule.length) return resolve()
      setTimeout(tick, Math.max(0, schedule[next]!.at - (epoch() - startAt)))
    }
    setTimeout(tick, Math.max(0, startAt - epoch()))
  })
  await new Promise((r) => setTimeout(r, Math.max(0, setup.loadMs + setup.drainMs - (epoch() - startAt))))
  stop.abort()
  await strategy.close()
  await Promise.all(pending)
  const stats = sim.stats()
  await sim.close()
  process.send!({ type: 'done', name: strategy.name, latency, stats, arrived } satisfies FromWorker, () =>
    process.exit(0),
  )
}

if (process.send) {
  process.once('message', (m: ToWorker) => {
    if (m.type === 'setup') void run(m.letter, m.setup)
  })
}
