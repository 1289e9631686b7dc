// One strategy of `pnpm bench compare`, in its own process, with its own simulator in a child process
// (_compare-upstream.ts: the upstream is another machine in real life and stamps arrivals on its own
// clock, not when this strategy's event loop gets round to it).
// The parent (compare.ts) forks one worker per strategy, waits until all are ready, then sends every
// worker the same start moment; each replays the same seeded schedule from there and reports back.
// A time-scaled run forks the worker with the virtual clock's environment (_virtual-clock.ts, imported
// first so every clock of the process is scaled before anything else reads one).
import { epoch, virtualEpoch } from './_virtual-clock.js'
import { fork } from 'node:child_process'
import { subscribe } from 'node:diagnostics_channel'
import { once, setMaxListeners } from 'node:events'
import { setPriority } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { SimulatorOptions, SimulatorStats } from '@qwen-guard/simulator'
import type { Arrived } from './_compare-chart.js'
import type { FromUpstream, ToUpstream } from './_compare-upstream.js'
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
  | {
      type: 'done'
      name: string
      latency: (number | null)[]
      stats: SimulatorStats
      arrived: Arrived[]
      /** Arrival lag per request, sorted, ms: the simulator's stamp minus the write to the socket. */
      lags: number[]
    }

/** The workers' scheduling priority (nice); their simulators keep the default, 0. */
export const WORKER_NICE = 10

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

/**
 * Forks this worker's upstream (_compare-upstream.ts) on the same clock (the environment carries the
 * virtual clock's scale and anchor) and waits until its simulator listens.
 */
async function startUpstream(options: SimulatorOptions) {
  const child = fork(fileURLToPath(new URL('./_compare-upstream.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx', '--conditions=source'],
  })
  let finished = false
  child.once('exit', (code) => {
    if (finished) return
    console.error(`the simulator's process exited with ${code} before reporting`)
    process.exit(1) // compare.ts then reports this worker as failed
  })
  const send = (m: ToUpstream) => child.send(m)
  const next = async <T extends FromUpstream['type']>(type: T) => {
    for (;;) {
      const [m] = (await once(child, 'message')) as [FromUpstream]
      if (m.type === type) return m as Extract<FromUpstream, { type: T }>
    }
  }
  send({ type: 'start', options })
  const { url } = await next('listening')
  return {
    url,
    /** The run's start moment (epoch ms on the shared clock): stamps are ms since then. */
    clock: (startAt: number) => send({ type: 'clock', startAt }),
    /** The simulator's stats and stamps; the child closes the simulator and exits. */
    finish: async () => {
      send({ type: 'finish' })
      const report = await next('finished')
      finished = true
      return report
    },
  }
}

async function run(letter: string, setup: Setup) {
  const make = factories[letter]
  if (!make) throw new Error(`no strategy ${letter}`)
  const schedule = scheduleOf(setup)
  const accounts = setup.accounts ?? 1
  const fallbacks = setup.fallbacks ?? []
  const keys = Array.from({ length: accounts }, (_, i) => (i === 0 ? 'sk-bench' : `sk-bench-${i}`))
  const upstream = await startUpstream({
    // The first account is 'acct' (scenario 1 reads its stats by that id).
    accounts: keys.map((key, i) => ({ id: i === 0 ? 'acct' : `acct-${i}`, keys: [key] })),
    limits: Object.fromEntries([setup, ...fallbacks].map((m) => [m.model, { rpm: m.rpm, tpm: m.tpm }])),
    ...SIM_LATENCY,
  })
  // The upstream is another machine: it does not wait for the callers' CPU. On this shared machine
  // the workers step back (nice 10, which needs no privilege) and their simulators keep nice 0, so a
  // simulator that has a request to read gets a core first and stamps it when it arrives.
  setPriority(WORKER_NICE)
  const strategy = make(
    {
      url: upstream.url,
      apiKey: keys[0]!,
      apiKeys: keys,
      model: setup.model,
      rpm: setup.rpm,
      tpm: setup.tpm,
      fallbacks,
    },
    setup.seed,
  )

  // When each request's body was written to its socket (undici's diagnostics channels: the guard's
  // transport and the SDK's fetch both publish them), numbered by a header the upstream records with
  // its stamp: the stamp minus the write is the arrival lag this harness adds (loopback, scheduling).
  let startAt = Infinity
  let calls = 0
  const written = new Map<number, number>()
  const numbers = new WeakMap<object, number>()
  subscribe('undici:request:create', (message) => {
    const { request } = message as { request: { addHeader(name: string, value: string): unknown } }
    const call = calls++
    numbers.set(request, call)
    request.addHeader('x-bench-call', String(call))
  })
  subscribe('undici:request:bodySent', (message) => {
    const call = numbers.get((message as { request: object }).request)
    if (call !== undefined) written.set(call, epoch() - startAt)
  })

  process.send!({ type: 'ready', name: strategy.name } satisfies FromWorker)
  startAt = await new Promise<number>((resolve) =>
    process.once('message', (m: ToWorker) => m.type === 'start' && resolve(virtualEpoch(m.startAt))),
  )
  upstream.clock(startAt)

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
  const { stats, stamped } = await upstream.finish()
  const lags = stamped
    .filter((s) => written.has(s.call))
    .map((s) => s.t - written.get(s.call)!)
    .sort((a, b) => a - b)
  const arrived = stamped.map(({ t, accepted, tokens }) => ({ t, accepted, tokens }))
  process.send!({ type: 'done', name: strategy.name, latency, stats, arrived, lags } satisfies FromWorker, () =>
    process.exit(0),
  )
}

if (process.send) {
  process.once('message', (m: ToWorker) => {
    if (m.type === 'setup') void run(m.letter, m.setup)
  })
}
