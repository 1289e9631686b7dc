// `pnpm bench http`: what the Express adapter and the relay cost, on this machine, in one run.
//
// Three processes: the simulator (its CLI, zero latency, limits too high to refuse), the apps
// (bench/_http-app.ts, one port per variant) and this one, which sends the load: throughput with
// autocannon (32 connections), latency with one keep-alive connection and sequential requests
// timed with performance.now() (autocannon's histogram counts whole milliseconds, too coarse for
// sub-millisecond differences).
// Beside throughput, the app's CPU time per request: bench/_http-app.ts answers its
// process.cpuUsage() on a loopback control port; it is read right before and right after each
// measured throughput run (one variant under load at a time, so the delta is that variant's) and
// divided by the requests autocannon completed in that run. The simulator and autocannon run in
// other processes, so their CPU is not counted. The app's event loop is saturated in these runs
// (the `loop busy` column).
// Alternating rounds: every round measures the baseline and its variants back to back (starting
// with another one each round), so a slow spell of the shared machine (other tenants, CPU
// frequency) weighs on both sides of a ratio instead of on one. CPU per request is pooled over the
// rounds (total CPU / total requests); req/s ratios are medians of the per-round ratios.
// Pinned CPUs (with taskset, on 2+ cores): the apps alone on the last CPU; this process (autocannon),
// the simulator and Redis on CPU 0. The app's CPU per request then measures its own work, not
// cache and scheduler contention with the load generator, and both sides of a ratio see the same
// offered load. Without taskset the run says so and shares the cores.
// The machine itself is noisy: a fixed CPU-bound loop pinned to one core takes anywhere from 430 to
// 825 ms of CPU from one repetition to the next here, so every CPU ratio is printed with the spread
// of its per-round values (interquartile range).
// (c) the relay: its ADDED latency (relay minus the same request straight to the simulator) at 100,
// 500 and 1,000 req/s, open loop at a fixed rate from its own process (bench/_http-open-loop.ts),
// alternating the two paths over OPEN_LOOP_ROUNDS rounds and pooling the samples; beside it the relay
// process's CPU per request, its GC pauses and event-loop delay during the relay rounds (where a tail
// comes from). Goal at 500 req/s: added <= 0.3 ms p50 and <= 1 ms p99. Then its maximum rate on one
// core: closed loop (autocannon, 32 connections), the relay process alone on its CPU.
// (d) where that tail comes from: bytes allocated per relayed call (V8's sampling heap profiler in the
// app), bytes per call that outlived a young-generation collection, and such collections per 5,000
// calls, for the node:http relay and the floor, then the Express and Koa relays beside the same floor
// mounted in Express (what the framework itself allocates); closed loop, 4 connections, after a warm-up.
// Every scenario is bounded: variants x (ROUNDS x BENCH_SECONDS + 1 s warm-up) for throughput,
// variants x LATENCY_ROUNDS x 2 s (+ 1 s warm-up) for latency, 3 rates x 2 paths x OPEN_LOOP_ROUNDS x
// OPEN_LOOP_SECONDS for the relay's open loop.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { Agent, request } from 'node:http'
import { createRequire } from 'node:module'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { redisServerInstalled, startRedisServer, type RedisServer } from '../test/support/redis-server.js'
import type { OpenLoopResult } from './_http-open-loop.js'
import { pin } from './_pin.js'

/** Throughput: ROUNDS alternating runs of SECONDS per variant (short runs, many pairs: see above). */
const SECONDS = Number(process.env.BENCH_SECONDS ?? 1)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10)
/** Latency: fewer, longer alternating runs (one connection, sequential requests). */
const LATENCY_SECONDS = 2
const LATENCY_ROUNDS = 3
/**
 * Relay latency: open-loop rates (req/s, BENCH_RATES=500 for one), alternating rounds per rate and
 * their length; BENCH_RELAYS=node:http,floor runs only those relays (names' beginnings).
 */
const OPEN_LOOP_RATES = (process.env.BENCH_RATES ?? '100,500,1000').split(',').map(Number)
const OPEN_LOOP_ROUNDS = Number(process.env.BENCH_OPEN_LOOP_ROUNDS ?? 3)
const OPEN_LOOP_SECONDS = Number(process.env.BENCH_OPEN_LOOP_SECONDS ?? 3)
/** Scenarios to run, e.g. BENCH_ONLY=a,c. Default: all. */
const ONLY = new Set((process.env.BENCH_ONLY ?? 'a,b,c,d').split(','))
/**
 * Node flags for the apps' process, e.g. BENCH_APP_FLAGS=--single-threaded-gc (V8's GC helper
 * threads compete with the app for the one core it is pinned to). Default: none.
 */
const APP_FLAGS = (process.env.BENCH_APP_FLAGS ?? '').split(' ').filter(Boolean)
const CONNECTIONS = 32
const root = fileURLToPath(new URL('..', import.meta.url))
const CHAT_BODY = JSON.stringify({
  model: 'qwen-plus',
  messages: [{ role: 'user', content: 'Write a haiku about rate limits.' }],
})

interface AutocannonResult {
  requests: { average: number; total: number }
  errors: number
  timeouts: number
  non2xx: number
}
type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

interface Target {
  url: string
  method: 'GET' | 'POST'
  headers?: Record<string, string>
  body?: string
}

/** Starts a child and resolves with the first stdout line that `pick` accepts. */
function startChild(
  args: string[],
  env: Record<string, string>,
  pick: (line: string) => string | undefined,
  nodeFlags: string[] = [],
) {
  const child = spawn(process.execPath, [...nodeFlags, '--conditions=source', '--import', 'tsx', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const ready = new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (data: Buffer) => {
      out += data.toString()
      for (const line of out.split('\n')) {
        const value = pick(line)
        if (value !== undefined) return resolve(value)
      }
    })
    child.once('exit', (code) => reject(new Error(`${args[0]} exited early (${code})`)))
  })
  return { child, ready }
}

interface AppUsage {
  cpuMicros: number
  loopIdleMs: number
  loopActiveMs: number
}

/** The app process's CPU time so far (user + system, µs) and event-loop idle/active time. */
async function appUsage(controlUrl: string): Promise<AppUsage> {
  const res = await fetch(controlUrl)
  if (!res.ok) throw new Error(`control endpoint answered ${res.status}`)
  return (await res.json()) as AppUsage
}

interface Pauses {
  gc: { count: number; totalMs: number; maxMs: number; over1ms: number; minor: number }
  loopDelayMs: { p50: number; p99: number; max: number }
}

/** The app process's GC pauses and event-loop delay since the previous call (bench/_http-app.ts). */
async function appPauses(controlUrl: string): Promise<Pauses> {
  const res = await fetch(`${controlUrl}?pauses`)
  return (await res.json()) as Pauses
}

const sum = <T>(list: T[], figure: (item: T) => number) => list.reduce((n, item) => n + figure(item), 0)

async function throughput(
  target: Target,
  warmup: boolean,
  controlUrl: string,
): Promise<{ rps: number; failed: number; cpuPerReq: number; cpuMicros: number; requests: number; loopBusy: number }> {
  const run = (duration: number) =>
    autocannon({
      url: target.url,
      method: target.method,
      headers: target.headers,
      body: target.body,
      connections: CONNECTIONS,
      duration,
    })
  if (warmup) await run(1)
  const before = await appUsage(controlUrl)
  const result = await run(SECONDS)
  const after = await appUsage(controlUrl)
  const active = after.loopActiveMs - before.loopActiveMs
  const idle = after.loopIdleMs - before.loopIdleMs
  return {
    rps: result.requests.average,
    failed: result.errors + result.timeouts + result.non2xx,
    cpuPerReq: (after.cpuMicros - before.cpuMicros) / result.requests.total,
    cpuMicros: after.cpuMicros - before.cpuMicros,
    requests: result.requests.total,
    loopBusy: active / (active + idle),
  }
}

/** One request on a keep-alive socket, timed from write to the last byte. */
function once(agent: Agent, target: Target): Promise<{ ms: number; status: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const req = request(target.url, { method: target.method, agent, headers: target.headers }, (res) => {
      res.resume()
      res.once('end', () => resolve({ ms: performance.now() - started, status: res.statusCode ?? 0 }))
    })
    req.once('error', reject)
    req.end(target.body)
  })
}

async function latency(target: Target, warmup: boolean): Promise<{ p50: number; p99: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const samples: number[] = []
  for (const [seconds, keep] of [
    [warmup ? 1 : 0.2, false],
    [LATENCY_SECONDS, true],
  ] as const) {
    const until = performance.now() + seconds * 1000
    while (performance.now() < until) {
      const { ms, status } = await once(agent, target)
      if (status >= 400) throw new Error(`${target.url} answered ${status}`)
      if (keep) samples.push(ms)
    }
  }
  agent.destroy()
  samples.sort((a, b) => a - b)
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? NaN
  return { p50: at(0.5), p99: at(0.99) }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN

interface Measured {
  rps: number
  failed: number
  /** App-process CPU µs per completed request during the throughput run. */
  cpuPerReq: number
  /** App CPU µs and requests completed in the run (pooled over rounds: total CPU / total requests). */
  cpuMicros: number
  requests: number
  /** Event-loop utilization of the app process during the throughput run (0..1). */
  loopBusy: number
  p50: number
  p99: number
  /** The same figures, round by round (for ratios paired within a round). */
  rounds: Omit<Measured, 'rounds'>[]
}

/**
 * Measures the targets in alternation, ROUNDS times (first round warms up), and returns the median
 * of each figure per target. Latency only when asked.
 */
async function compare(targets: Target[], withLatency: boolean, controlUrl: string): Promise<Measured[]> {
  const rounds: Omit<Measured, 'rounds'>[][] = targets.map(() => [])
  for (let round = 0; round < ROUNDS; round += 1) {
    // Each round starts with another variant: whatever drifts within a round falls on each in turn.
    for (let k = 0; k < targets.length; k += 1) {
      const i = (round + k) % targets.length
      rounds[i]!.push({ ...(await throughput(targets[i]!, round === 0, controlUrl)), p50: NaN, p99: NaN })
    }
  }
  const latencies: Array<Array<{ p50: number; p99: number }>> = targets.map(() => [])
  for (let round = 0; withLatency && round < LATENCY_ROUNDS; round += 1) {
    for (const [i, target] of targets.entries()) latencies[i]!.push(await latency(target, round === 0))
  }
  return rounds.map((list, i) => ({
    rps: median(list.map((m) => m.rps)),
    failed: list.reduce((sum, m) => sum + m.failed, 0),
    // Pooled over every round: the rounds alternate with the other variants, so total CPU over total
    // requests uses all the data and weighs a slow spell on each side alike.
    cpuPerReq: list.reduce((sum, m) => sum + m.cpuMicros, 0) / list.reduce((sum, m) => sum + m.requests, 0),
    cpuMicros: list.reduce((sum, m) => sum + m.cpuMicros, 0),
    requests: list.reduce((sum, m) => sum + m.requests, 0),
    loopBusy: median(list.map((m) => m.loopBusy)),
    p50: withLatency ? median(latencies[i]!.map((l) => l.p50)) : NaN,
    p99: withLatency ? median(latencies[i]!.map((l) => l.p99)) : NaN,
    rounds: list,
  }))
}

/** `figure(variant) / figure(baseline)` within each round. */
function pairedRatios(variant: Measured, base: Measured, figure: (m: Omit<Measured, 'rounds'>) => number): number[] {
  return variant.rounds.map((m, i) => figure(m) / figure(base.rounds[i]!))
}

/** Median over rounds of `figure(variant) / figure(baseline)` within each round. */
function pairedRatio(variant: Measured, base: Measured, figure: (m: Omit<Measured, 'rounds'>) => number): number {
  return median(pairedRatios(variant, base, figure))
}

/** The middle half of a list of values, as text: "p25-p75". */
function spread(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
  return `${at(0.25).toFixed(2)}-${at(0.75).toFixed(2)}`
}

/** (d): calls per reading, and the connections they are sent on (closed loop). */
const ALLOC_CALLS = 5_000
const ALLOC_CONNECTIONS = 4

/** Sends `calls` chat completions to `url` over ALLOC_CONNECTIONS keep-alive connections, each as soon as the last came back. */
async function closedLoop(url: string, calls: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: ALLOC_CONNECTIONS })
  let sent = 0
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        url,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', authorization: 'Bearer sk-sim' } },
        (res) => {
          res.resume()
          res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))))
        },
      )
      req.on('error', reject)
      req.end(CHAT_BODY)
    })
  await Promise.all(
    Array.from({ length: ALLOC_CONNECTIONS }, async () => {
      while (sent++ < calls) await one()
    }),
  )
  agent.destroy()
}

const ms = (value: number) => Number(value.toFixed(3))
const pass = (ok: boolean) => (ok ? 'PASS' : 'FAIL')
const us = (value: number) => Number(value.toFixed(1))
/** CPU ratio (the throughput a CPU-bound server keeps): baseline CPU per request over the row's, both pooled over all rounds. */
const cpuRatio = (m: Measured, base: Measured) => base.cpuPerReq / m.cpuPerReq
/** Requests per second of the row over the baseline's, paired by round. */
const rpsRatio = (m: Measured, base: Measured) => pairedRatio(m, base, (r) => r.rps)
/** The CPU columns of a row, against the row's baseline. */
const cpuColumns = (m: Measured, base: Measured) => ({
  'CPU µs/req': us(m.cpuPerReq),
  'added CPU µs/req': us(m.cpuPerReq - base.cpuPerReq),
  'CPU ratio': ms(cpuRatio(m, base)),
  'CPU ratio IQR': spread(pairedRatios(base, m, (r) => r.cpuPerReq)),
  'loop busy': Number(m.loopBusy.toFixed(2)),
})
const NOISE_NOTE =
  'the result is judged on the CPU ratio: app-process CPU per request, pooled over all rounds (total CPU / total requests), baseline ÷ variant; its IQR is the spread of the per-round ratios (baseline and variant measured back to back). The req/s ratio (median of per-round ratios) is shown beside it'

let redisServer: RedisServer | undefined
const load = () =>
  loadavg()
    .map((value) => value.toFixed(1))
    .join(' ')
console.log(`load average at start: ${load()} on ${cpus().length} cores (other work on the machine skews every figure)`)
const children: ChildProcess[] = []
try {
  const sim = startChild(
    ['packages/simulator/src/cli.ts', '--port', '0', '--no-burst', '--limit', 'qwen-plus:1000000000:1000000000000000'],
    {},
    (line) => (line.startsWith('http://') ? line.trim() : undefined),
  )
  children.push(sim.child)
  const simUrl = await sim.ready
  redisServer = redisServerInstalled() ? await startRedisServer() : undefined
  const apps = startChild(
    ['bench/_http-app.ts'],
    { SIM_URL: simUrl, REDIS_URL: redisServer?.url ?? '' },
    (line) => (line.startsWith('READY ') ? line.slice(6) : undefined),
    APP_FLAGS,
  )
  children.push(apps.child)
  const ready = await apps.ready
  const cpuCount = cpus().length
  const pinned =
    cpuCount >= 2 &&
    pin(apps.child.pid, cpuCount - 1) &&
    pin(process.pid, 0) &&
    pin(sim.child.pid, 0) &&
    (!redisServer || pin(redisServer.pid, 0))
  console.log(
    pinned
      ? `CPUs: the apps alone on CPU ${cpuCount - 1}; autocannon (this process), the simulator and Redis on CPU 0`
      : 'CPUs: not pinned (needs taskset and 2+ cores): the apps share the cores with the load generator, figures are noisier',
  )
  const urls = JSON.parse(ready) as Record<
    | 'control'
    | 'bare'
    | 'mounted'
    | 'emptyMiddleware'
    | 'plainCall'
    | 'guardedMemory'
    | 'guardedRedis'
    | 'rateLimited'
    | 'relay'
    | 'relayKoa'
    | 'relayNodeHttp'
    | 'proxyFloor'
    | 'proxyFloorExpress',
    string
  >

  const get = (base: string, path: string): Target => ({ url: `${base}${path}`, method: 'GET' })
  const post = (url: string): Target => ({
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-sim' },
    body: CHAT_BODY,
  })

  // (a) mount cost
  if (ONLY.has('a')) {
    const [bare, empty, mounted] = (await compare(
      [get(urls.bare, '/ping'), get(urls.emptyMiddleware, '/ping'), get(urls.mounted, '/ping')],
      false,
      urls.control,
    )) as [Measured, Measured, Measured]
    const mountRatio = rpsRatio(mounted, bare)
    const mountCpuRatio = cpuRatio(mounted, bare)
    console.log(
      `\n(a) mount cost: GET /ping that never calls Qwen (${CONNECTIONS} connections, ${ROUNDS} alternating ${SECONDS} s runs)\n`,
    )
    console.table([
      { app: 'bare Express', 'req/s': Math.round(bare.rps), ratio: 1, ...cpuColumns(bare, bare), failed: bare.failed },
      {
        app: 'app.use((req, res, next) => next())',
        'req/s': Math.round(empty.rps),
        ratio: ms(rpsRatio(empty, bare)),
        ...cpuColumns(empty, bare),
        failed: empty.failed,
      },
      {
        app: 'app.use(qwenGuard())',
        'req/s': Math.round(mounted.rps),
        ratio: ms(mountRatio),
        ...cpuColumns(mounted, bare),
        failed: mounted.failed,
        goal: '>= 0.97',
        result: pass(mountCpuRatio >= 0.97),
        'req/s result': pass(mountRatio >= 0.97),
      },
    ])
    console.log(`goal: CPU ratio >= 0.97. ${NOISE_NOTE}`)
  }

  // (b) per-call cost, and (d) express-rate-limit for scale
  if (ONLY.has('b')) {
    // `goal`: the row is held to the goals below; (d) is there for scale only.
    const variants = [
      { name: 'plain openai client', target: get(urls.plainCall, '/chat'), goal: false },
      { name: 'req.qwen (memory store)', target: get(urls.guardedMemory, '/chat'), goal: true },
      ...(urls.guardedRedis
        ? [{ name: 'req.qwen (Redis store)', target: get(urls.guardedRedis, '/chat'), goal: true }]
        : []),
      { name: 'express-rate-limit (one counter/request)', target: get(urls.rateLimited, '/chat'), goal: false },
    ]
    // (d) must measure the limiter, not a route it never saw: its answers carry its RateLimit header.
    const probe = await fetch(get(urls.rateLimited, '/chat').url)
    await probe.arrayBuffer()
    if (probe.status !== 200 || !probe.headers.has('ratelimit')) {
      throw new Error(`express-rate-limit row: expected 200 with a RateLimit header, got ${probe.status}`)
    }
    const figures = await compare(
      variants.map((variant) => variant.target),
      true,
      urls.control,
    )
    const measured = variants.map((variant, i) => ({ ...variant, ...figures[i]! }))
    const base = measured[0]!
    console.log(
      `\n(b) per-call cost: GET /chat making one chat completion (throughput: ${CONNECTIONS} connections; latency: 1 connection, sequential)\n`,
    )
    console.table([
      ...measured.map((m) => ({
        route: m.name,
        'req/s': Math.round(m.rps),
        ratio: ms(rpsRatio(m, base)),
        'p50 ms': ms(m.p50),
        'p99 ms': ms(m.p99),
        'added p50 ms': ms(m.p50 - base.p50),
        ...cpuColumns(m, base),
        failed: m.failed,
        result: m.goal ? pass(cpuRatio(m, base) >= 0.9 && m.p50 - base.p50 < 1) : '',
        'req/s result': m.goal ? pass(rpsRatio(m, base) >= 0.9 && m.p50 - base.p50 < 1) : '',
      })),
    ])
    if (!urls.guardedRedis) console.log('Redis row skipped: redis-server is not installed.')
    console.log(
      'goals (req.qwen rows): CPU ratio >= 0.90 and added p50 < 1 ms; the express-rate-limit row (d) is for scale, no goal',
    )
    console.log(NOISE_NOTE)
  }

  // (c) relay vs the simulator directly
  if (ONLY.has('c')) {
    const direct = post(`${simUrl}/chat/completions`)
    const allRelays = [
      { name: 'express', what: "app.use('/v1', guard.proxy())", target: post(`${urls.relay}/v1/chat/completions`) },
      { name: 'koa', what: 'new Koa().use(guard.proxy())', target: post(`${urls.relayKoa}/v1/chat/completions`) },
      {
        name: 'node:http',
        what: 'createNodeRelay(guard) as the node:http listener',
        target: post(`${urls.relayNodeHttp}/v1/chat/completions`),
      },
      {
        name: 'floor (no guard)',
        what: 'a bare node:http proxy with undici.request, no guard: what any Node hop adds here (no goal)',
        target: post(`${urls.proxyFloor}/v1/chat/completions`),
        noGoal: true,
      },
    ]
    // BENCH_RELAYS=node:http,floor runs only the relays whose names start with one of these.
    const wanted = process.env.BENCH_RELAYS?.split(',')
    const relays = allRelays.filter((relay) => !wanted || wanted.some((name) => relay.name.startsWith(name)))
    const relayed = relays[0]!.target
    // Open loop at fixed rates, the load from its own process (on CPU 0 with the simulator).
    const sender = fork(fileURLToPath(new URL('./_http-open-loop.ts', import.meta.url)), [], {
      execArgv: ['--conditions=source', '--import', 'tsx'],
    })
    children.push(sender)
    await new Promise((resolve) => sender.once('message', resolve))
    if (pinned) pin(sender.pid, 0)
    const openLoop = (target: Target, rate: number, seconds: number) =>
      new Promise<OpenLoopResult>((resolve) => {
        sender.once('message', resolve)
        sender.send({ url: target.url, headers: target.headers ?? {}, body: target.body ?? '', rate, seconds })
      })
    const paths = [direct, ...relays.map((relay) => relay.target)]
    // Warm-up, not recorded: each path once at the middle rate (the JIT and lazy loads of a relay no
    // other scenario has run yet would be the first round's tail).
    for (const path of paths) await openLoop(path, 500, 1)
    /** The open-loop rounds at every rate, printed as one table under `layout`. */
    const openLoopTable = async (layout: string, layoutShort: string) => {
      const rows: Record<string, string | number>[] = []
      const verdicts: string[] = []
      for (const rate of OPEN_LOOP_RATES) {
        // Alternating rounds, pooled samples: a slow spell weighs on every path.
        const pooled: number[][] = paths.map(() => [])
        const failed = paths.map(() => 0)
        const late = paths.map(() => 0)
        const pauses: Pauses[][] = paths.map(() => [])
        const cpu = paths.map(() => ({ micros: 0, requests: 0 }))
        for (let round = 0; round < OPEN_LOOP_ROUNDS; round++) {
          for (let k = 0; k < paths.length; k++) {
            const i = (round + k) % paths.length
            await appPauses(urls.control) // start over
            const before = await appUsage(urls.control)
            const result = await openLoop(paths[i]!, rate, OPEN_LOOP_SECONDS)
            pauses[i]!.push(await appPauses(urls.control))
            cpu[i]!.micros += (await appUsage(urls.control)).cpuMicros - before.cpuMicros
            cpu[i]!.requests += result.sent
            pooled[i]!.push(...result.samples)
            failed[i]! += result.failed
            late[i] = Math.max(late[i]!, result.lateP99Ms)
          }
        }
        const sorted = pooled.map((list) => list.sort((a, b) => a - b))
        const at = (list: number[], q: number) => list[Math.min(list.length - 1, Math.floor(q * list.length))] ?? NaN
        const d = sorted[0]!
        relays.forEach((relay, j) => {
          const i = j + 1
          const r = sorted[i]!
          const addedP50 = at(r, 0.5) - at(d, 0.5)
          const addedP99 = at(r, 0.99) - at(d, 0.99)
          const goal = rate === 500 && !relay.noGoal ? addedP50 <= 0.3 && addedP99 <= 1 : undefined
          if (goal !== undefined)
            verdicts.push(
              `goal at 500 req/s, ${relay.name}, ${layoutShort}: added p50 <= 0.3 ms and p99 <= 1 ms: ${pass(goal)} (+${ms(addedP50)} / +${ms(addedP99)} ms)`,
            )
          rows.push({
            'req/s': rate,
            relay: relay.name,
            'direct p50 / p99 ms': `${ms(at(d, 0.5))} / ${ms(at(d, 0.99))}`,
            'relay p50 / p99 ms': `${ms(at(r, 0.5))} / ${ms(at(r, 0.99))}`,
            'added p50 ms': ms(addedP50),
            'added p99 ms': ms(addedP99),
            samples: `${d.length} / ${r.length}`,
            failed: failed[0]! + failed[i]!,
            'sender late p99 ms': ms(Math.max(late[0]!, late[i]!)),
            'app CPU µs/req': us(cpu[i]!.micros / cpu[i]!.requests),
            'app GC pauses (> 1 ms) / max ms': `${sum(pauses[i]!, (p) => p.gc.count)} (${sum(pauses[i]!, (p) => p.gc.over1ms)}) / ${ms(Math.max(...pauses[i]!.map((p) => p.gc.maxMs)))}`,
            'app loop delay p99 / max ms': `${ms(median(pauses[i]!.map((p) => p.loopDelayMs.p99)))} / ${ms(Math.max(...pauses[i]!.map((p) => p.loopDelayMs.max)))}`,
            ...(goal === undefined ? {} : { goal: '<= 0.3 / <= 1 ms', result: pass(goal) }),
          })
        })
        // The app's own GC while the simulator was called directly: what the process does idle.
        rows.push({
          'req/s': rate,
          relay: '(none: direct)',
          'app CPU µs/req': us(cpu[0]!.micros / cpu[0]!.requests),
          'app GC pauses (> 1 ms) / max ms': `${sum(pauses[0]!, (p) => p.gc.count)} (${sum(pauses[0]!, (p) => p.gc.over1ms)}) / ${ms(Math.max(0, ...pauses[0]!.map((p) => p.gc.maxMs)))}`,
        })
      }
      console.log(
        `\n(c) relay latency: POST /chat/completions, non-streaming, zero-latency simulator; open loop at a fixed rate from its own process ` +
          `(${OPEN_LOOP_ROUNDS} alternating rounds of ${OPEN_LOOP_SECONDS} s per path and rate, samples pooled; latency from write to last byte). ` +
          `Relays: ${relays.map((relay) => `${relay.name} = ${relay.what}`).join('; ')}. App flags: ${APP_FLAGS.join(' ') || '(none)'}. ` +
          `CPUs: ${layout}\n`,
      )
      console.table(rows)
      for (const verdict of verdicts) console.log(verdict)
    }
    // Where the simulator runs decides how often a request crosses between the two CPUs: beside the
    // sender (CPU 0), the direct path never crosses and the relayed one crosses four times (sender ->
    // relay -> simulator -> relay -> sender); beside the relay, each path crosses twice, so "added"
    // is the relay's own work and one more loopback hop, not two more wake-ups on another core.
    await openLoopTable(
      pinned ? 'the simulator with the sender on CPU 0 (direct path: no CPU crossing; relayed: four)' : 'not pinned',
      pinned ? 'simulator with the sender' : 'not pinned',
    )
    if (pinned) {
      pin(sim.child.pid, cpuCount - 1)
      await openLoopTable(
        `the simulator with the relay on CPU ${cpuCount - 1} (each path crosses between the CPUs twice)`,
        'simulator with the relay',
      )
      pin(sim.child.pid, 0)
    }
    // Saturation: closed loop (autocannon, 32 connections), the relay app alone on its core.
    const [sd, sr] = (await compare([direct, relayed], false, urls.control)) as [Measured, Measured]
    console.log(
      `\n(c) relay maximum rate, closed loop (${CONNECTIONS} connections, ${ROUNDS} alternating ${SECONDS} s runs, median), ` +
        `${pinned ? 'the relay alone on one core' : 'NOT pinned'}:\n`,
    )
    console.table([
      { path: 'simulator directly', 'req/s': Math.round(sd.rps), failed: sd.failed },
      {
        path: 'through the relay',
        'req/s': Math.round(sr.rps),
        'app CPU µs/req': us(sr.cpuPerReq),
        'loop busy': Number(sr.loopBusy.toFixed(2)),
        failed: sr.failed,
      },
    ])
  }
  // (d) allocation per relayed call, the relay against the floor
  if (ONLY.has('d')) {
    const variants = [
      { name: 'node:http (createNodeRelay)', url: `${urls.relayNodeHttp}/v1/chat/completions` },
      { name: 'floor (no guard)', url: `${urls.proxyFloor}/v1/chat/completions` },
      { name: 'Express relay', url: `${urls.relay}/v1/chat/completions` },
      { name: 'Express floor (the floor mounted in Express)', url: `${urls.proxyFloorExpress}/v1/chat/completions` },
      { name: 'Koa relay', url: `${urls.relayKoa}/v1/chat/completions` },
    ]
    const rows: Record<string, string | number>[] = []
    for (const variant of variants) {
      await closedLoop(variant.url, ALLOC_CALLS) // warm-up
      await appPauses(urls.control) // start over
      await closedLoop(variant.url, ALLOC_CALLS)
      const minor = (await appPauses(urls.control)).gc.minor
      const sampled = async (kept: boolean) => {
        await fetch(`${urls.control}?alloc=start${kept ? '&kept' : ''}`)
        await closedLoop(variant.url, ALLOC_CALLS)
        const { bytes } = (await (await fetch(`${urls.control}?alloc=stop`)).json()) as { bytes: number }
        return bytes / ALLOC_CALLS / 1024
      }
      rows.push({
        path: variant.name,
        'allocated KB/call': us(await sampled(false)),
        'outlived a young GC, KB/call': us(await sampled(true)),
        'young-gen GCs per 5,000 calls': Math.round((minor * 5_000) / ALLOC_CALLS),
      })
    }
    console.log(
      `\n(d) allocation per call, closed loop (${ALLOC_CONNECTIONS} connections, ${ALLOC_CALLS} calls per reading after as many to warm up; ` +
        'V8 sampling heap profiler, 1 KiB interval; young-generation collections counted without the profiler):\n',
    )
    console.table(rows)
  }
  console.log(`\nload average at end: ${load()}`)
} finally {
  for (const child of children) child.kill('SIGTERM')
  await redisServer?.stop()
}
