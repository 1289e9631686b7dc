// `pnpm bench scale [--quick] [--margin 0.99] [--sets 10,3h]`: K = 1, 3, 5, 10 accounts x 1, 2, 4 instances side by side. Each
// instance is a child process with a guard from the built @qwen-guard/core (the multi-process test's
// worker, test/multi-process/guard-worker.mjs) on one shared redis-server; one simulator (this
// process) holds the K accounts. 30 users call through every instance in closed loops, far more than
// the accounts allow. Real time everywhere (createGuard has no time scale): the full run keeps each
// configuration loaded 75 s so the busiest sliding 60 s is measured; --quick loads 15 s and reports
// the steady per-second rate instead. The last rows make the accounts uneven: K = 3 with one account at
// half the limit (300 RPM / 5 rps, told to the guard and the simulator alike), so the goal is 2.5 x one.
// --margin sets every guard's upstream.safetyMargin; --sets picks the account sets (K = 1 always runs).
import { fork, type ChildProcess } from 'node:child_process'
import { availableParallelism, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startSimulator } from '@qwen-guard/simulator'
import { startRedisServer } from '../test/support/redis-server.js'

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    // upstream.safetyMargin of every guard; default: the guard's own (0.97).
    margin: { type: 'string' },
    // Which account sets to run besides K = 1, e.g. `--sets 10,3h` (3h: K = 3 with one at half); default all.
    sets: { type: 'string' },
  },
  allowPositionals: true,
})
const QUICK = values.quick
const MARGIN = values.margin === undefined ? undefined : Number(values.margin)
if (MARGIN !== undefined && !(MARGIN > 0 && MARGIN <= 1))
  throw new Error(`--margin must be in (0, 1], got ${values.margin}`)
const RPS = 10 // per account; rpm 600: both the second and the minute bind
const RPM = 600
const MODEL = 'scale-model'
const LOAD_MS = QUICK ? 15_000 : 75_000
const STEADY_FROM_MS = 8_000 // after the ramp-up (2 rps x1.5 per second)
const MAX_WAIT_MS = 10_000
const USERS = Array.from({ length: 30 }, (_, i) => `user-${i}`)
const KS = [1, 3, 5, 10]
const INSTANCES = [1, 2, 4]
/** Account sets: K even accounts, then K = 3 with the last at half the limit. */
const ALL_SETS: { k: number; halfLast: boolean }[] = [
  ...KS.map((k) => ({ k, halfLast: false })),
  { k: 3, halfLast: true },
]
const setName = (set: { k: number; halfLast: boolean }) => `${set.k}${set.halfLast ? 'h' : ''}`
// K = 1 always runs: it is the "one account" every other row is measured against.
const SETS = values.sets
  ? ALL_SETS.filter((set) => set.k === 1 || values.sets!.split(',').includes(setName(set)))
  : ALL_SETS
const unknown = values.sets?.split(',').filter((name) => !ALL_SETS.some((set) => setName(set) === name)) ?? []
if (unknown.length > 0) throw new Error(`--sets: ${unknown.join(',')} not among ${ALL_SETS.map(setName).join(',')}`)

interface Result {
  k: number
  /** Capacity in accounts at the full limit (K, or K - 0.5 with one at half). */
  capacity: number
  halfLast: boolean
  instances: number
  steadyRps: number
  upstream429: number
  busiest60: number | undefined
  jain: number
  p50: number
  p99: number
  load: number
}

const workerPath = fileURLToPath(new URL('../test/multi-process/guard-worker.mjs', import.meta.url))

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

function jain(xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0)
  const squares = xs.reduce((a, b) => a + b * b, 0)
  return squares === 0 ? 1 : (sum * sum) / (xs.length * squares)
}

async function runOne(k: number, halfLast: boolean, instances: number, redisUrl: string): Promise<Result> {
  const half = { [MODEL]: { rpm: RPM / 2, rps: RPS / 2 } }
  const accounts = Array.from({ length: k }, (_, i) => ({
    id: `acct-${i}`,
    keys: [`sk-${i}`],
    ...(halfLast && i === k - 1 ? { models: half } : {}),
  }))
  const sim = await startSimulator({ accounts, limits: { [MODEL]: { rpm: RPM, rps: RPS, tpm: 100_000_000 } } })
  const setup = {
    store: { kind: 'redis', url: redisUrl },
    simUrl: sim.url,
    accounts: accounts.map((a) => ({ id: a.id, apiKey: a.keys[0], ...(a.models ? { models: a.models } : {}) })),
    model: MODEL,
    rpm: RPM,
    rps: RPS,
    quotas: { '*': { rpm: 100_000 } },
    prefix: `scale-${k}${halfLast ? 'h' : ''}-${instances}-${Date.now().toString(36)}`,
    maxWaitMs: MAX_WAIT_MS,
    safetyMargin: MARGIN,
    loadMs: LOAD_MS,
    retryPauseMs: 200,
    loops: USERS,
  }
  const children: ChildProcess[] = []
  type Reply = { type: string; result?: { users: Record<string, { admitted: number }>; queuedMs: number[] } }
  const message = (child: ChildProcess, type: string) =>
    new Promise<Reply>((resolve, reject) => {
      child.on('message', (m: Reply) => m.type === type && resolve(m))
      child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
    })
  try {
    // execArgv []: plain node, so the workers run the built @qwen-guard/core (pnpm build first).
    for (let i = 0; i < instances; i++)
      children.push(fork(workerPath, [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
    await Promise.all(
      children.map((child) => {
        const ready = message(child, 'ready')
        child.send({ type: 'setup', setup })
        return ready
      }),
    )
    const startAt = Date.now() + 300
    const done = children.map((child) => message(child, 'done'))
    for (const child of children) child.send({ type: 'start', startAt })
    let atSteady = 0
    let atStop = 0
    setTimeout(() => (atSteady = sim.stats().accepted), startAt + STEADY_FROM_MS - Date.now())
    setTimeout(() => (atStop = sim.stats().accepted), startAt + LOAD_MS - Date.now())
    const results = (await Promise.all(done)).map((m) => m.result!)
    const stats = sim.stats()
    const perUser = new Map<string, number>()
    const queued: number[] = []
    for (const r of results) {
      for (const [user, tally] of Object.entries(r.users)) perUser.set(user, (perUser.get(user) ?? 0) + tally.admitted)
      queued.push(...r.queuedMs)
    }
    queued.sort((a, b) => a - b)
    // Each account's busiest 60 s against its own RPM (the half account against half).
    const perAccount60 = Object.entries(stats.accounts).map(
      ([id, models]) => (models[MODEL]?.maxRequestsPer60s ?? 0) / (halfLast && id === `acct-${k - 1}` ? RPM / 2 : RPM),
    )
    return {
      k,
      capacity: halfLast ? k - 0.5 : k,
      halfLast,
      instances,
      steadyRps: (atStop - atSteady) / ((LOAD_MS - STEADY_FROM_MS) / 1000),
      upstream429: Object.values(stats.refused).reduce((a, b) => a + b, 0),
      busiest60: QUICK ? undefined : Math.min(...perAccount60),
      jain: jain(USERS.map((u) => perUser.get(u) ?? 0)),
      p50: quantile(queued, 0.5),
      p99: quantile(queued, 0.99),
      load: loadavg()[0]! / availableParallelism(),
    }
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill()
    await sim.close()
  }
}

const label = (r: Result) => (r.halfLast ? `${r.k} (one at half)` : String(r.k))

const redis = await startRedisServer()
const results: Result[] = []
try {
  for (const { k, halfLast } of SETS) {
    for (const instances of INSTANCES) {
      const r = await runOne(k, halfLast, instances, redis.url)
      results.push(r)
      console.error(
        `  done K=${label(r)} x ${instances}: ${r.steadyRps.toFixed(1)} rps, ${r.upstream429} upstream 429s`,
      )
    }
  }
} finally {
  await redis.stop()
}

const one = results.find((r) => r.k === 1 && !r.halfLast && r.instances === 1)!.steadyRps
const pf = (ok: boolean) => (ok ? 'PASS' : '**FAIL**')
console.log(
  `\npnpm bench scale${QUICK ? ' --quick' : ''}: real time, ${LOAD_MS / 1000} s of load per row (steady rate from ${STEADY_FROM_MS / 1000} s), ` +
    `${USERS.length} users in closed loops on every instance, accounts at ${RPM} RPM / ${RPS} rps, safetyMargin ${MARGIN ?? '0.97 (default)'}, queue.maxWaitMs ${MAX_WAIT_MS}; ` +
    `one account = K=1 x 1 instance: ${one.toFixed(2)} rps steady\n`,
)
console.log(
  `| K | instances | accepted / (K x one) (>= 0.97) | upstream 429s (0) | ${QUICK ? 'steady rps per account / rps' : 'busiest 60 s per account / RPM'} (>= 0.97) | Jain (>= 0.99) | p50 / p99 queue wait (p99 <= ${MAX_WAIT_MS} ms) | load / core |`,
)
console.log('|---|---|---|---|---|---|---|---|')
for (const r of results) {
  const ratio = r.steadyRps / (r.capacity * one)
  const perAccount = r.busiest60 ?? r.steadyRps / (r.capacity * RPS)
  console.log(
    `| ${label(r)} | ${r.instances} | ${ratio.toFixed(3)} ${pf(ratio >= 0.97)} | ${r.upstream429} ${pf(r.upstream429 === 0)} | ` +
      `${perAccount.toFixed(3)} ${pf(perAccount >= 0.97)} | ${r.jain.toFixed(3)} ${pf(r.jain >= 0.99)} | ` +
      `${Math.round(r.p50)} / ${Math.round(r.p99)} ms ${pf(r.p99 <= MAX_WAIT_MS)} | ${r.load.toFixed(1)} |`,
  )
}
