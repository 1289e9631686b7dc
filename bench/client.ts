// `pnpm bench client`: the guard's own cost per call, without a web framework: `guard.client()` vs a
// plain `openai` client, both calling the simulator (zero latency, its own process) from this
// process with 32 calls in flight. Reported as ADDED CPU µs per call (guarded minus plain), the
// median of RUNS runs; goals (issue 12): <= 10 µs on the memory store, <= 30 µs on Redis. One run:
// ROUNDS alternating rounds (starting with the other client each round) of CALLS calls per client,
// CPU of this process pooled over the rounds (total CPU / total calls). With taskset this process runs
// alone on the last CPU and the simulator and Redis on CPU 0, as in `bench http`.
// Bounded: (2 warm-up + RUNS x ROUNDS) x CALLS calls per client and store.
import { spawn } from 'node:child_process'
import { cpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import OpenAI from 'openai'
import { createGuard, type GuardOptions } from '../packages/core/src/index.js'
import { redisServerInstalled, startRedisServer, type RedisServer } from '../test/support/redis-server.js'
import { pin } from './_pin.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4)
const CALLS = Number(process.env.BENCH_CALLS ?? 1_000)
/** Added CPU µs per call allowed, by store (issue 12). */
const GOALS: Record<string, number> = { memory: 10, Redis: 30 }
const IN_FLIGHT = 32
const CHAT = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'Write a haiku about rate limits.' }] }
const root = fileURLToPath(new URL('..', import.meta.url))

/** CPU µs this process spends making `calls` calls, IN_FLIGHT at a time. */
async function cpuFor(client: OpenAI, calls: number): Promise<number> {
  let left = calls
  const before = process.cpuUsage()
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (left-- > 0) await client.chat.completions.create(CHAT)
    }),
  )
  const used = process.cpuUsage(before)
  return used.user + used.system
}

const sim = spawn(
  process.execPath,
  [
    '--conditions=source',
    '--import',
    'tsx',
    'packages/simulator/src/cli.ts',
    '--port',
    '0',
    '--no-burst',
    '--limit',
    'qwen-plus:1000000000:1000000000000000',
  ],
  {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  },
)
let redisServer: RedisServer | undefined
try {
  const simUrl = await new Promise<string>((resolve, reject) => {
    sim.stdout.on('data', (data: Buffer) => {
      const url = /http:\/\/\S+/.exec(data.toString())?.[0]
      if (url) resolve(url)
    })
    sim.once('exit', (code) => reject(new Error(`simulator exited early (${code})`)))
  })
  redisServer = redisServerInstalled() ? await startRedisServer() : undefined
  const last = cpus().length - 1
  const pinned = last >= 1 && pin(process.pid, last) && pin(sim.pid, 0) && (!redisServer || pin(redisServer.pid, 0))
  console.log(
    pinned
      ? `CPUs: this process alone on CPU ${last}; the simulator and Redis on CPU 0`
      : 'CPUs: not pinned (needs taskset and 2+ cores)',
  )

  const options = (store?: GuardOptions['store']): GuardOptions => ({
    upstream: { baseURL: simUrl, apiKey: 'sk-sim', rampUp: false, safetyMargin: 1 },
    models: { 'qwen-plus': { rpm: 1_000_000_000, tpm: 1_000_000_000_000 } },
    quotas: { user: { rpm: 100_000_000, tpm: 100_000_000_000 } },
    queue: { maxSize: 100_000 },
    ...(store ? { store } : {}),
  })
  const plain = new OpenAI({ baseURL: simUrl, apiKey: 'sk-sim', maxRetries: 0 })
  const redis = redisServer ? new Redis(redisServer.url) : undefined
  const guards = [
    { store: 'memory', guard: createGuard(options()) },
    // The same with Prometheus metrics on (issue 13: metrics cost no more than 5 µs per call).
    { store: 'memory + metrics', guard: createGuard({ ...options(), metrics: true }) },
    ...(redis ? [{ store: 'Redis', guard: createGuard(options({ redis, prefix: 'bench-client' })) }] : []),
  ]
  const rows = []
  const median = (values: number[]) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)]!
  const fixed = (value: number) => Number(value.toFixed(1))
  for (const { store, guard } of guards) {
    const guarded = guard.client({ user: 'u1' })
    for (const client of [plain, guarded, plain, guarded]) await cpuFor(client, CALLS) // warm-up
    const runs: { plain: number; guarded: number }[] = []
    for (let run = 0; run < RUNS; run += 1) {
      let plainCpu = 0
      let guardedCpu = 0
      for (let round = 0; round < ROUNDS; round += 1) {
        const [first, second] = (run * ROUNDS + round) % 2 === 0 ? [plain, guarded] : [guarded, plain]
        const a = await cpuFor(first, CALLS)
        const b = await cpuFor(second, CALLS)
        plainCpu += first === plain ? a : b
        guardedCpu += first === plain ? b : a
      }
      runs.push({ plain: plainCpu / (ROUNDS * CALLS), guarded: guardedCpu / (ROUNDS * CALLS) })
    }
    const added = runs.map((r) => r.guarded - r.plain)
    const goal = GOALS[store]
    rows.push({
      store,
      'plain CPU µs/call (median)': fixed(median(runs.map((r) => r.plain))),
      'guard.client CPU µs/call (median)': fixed(median(runs.map((r) => r.guarded))),
      'added µs/call, each run': added.map((x) => x.toFixed(0)).join(' '),
      'added µs/call (median)': fixed(median(added)),
      goal: goal === undefined ? '' : `<= ${goal} µs`,
      result: goal === undefined ? '' : median(added) <= goal ? 'PASS' : 'FAIL',
    })
    await guard.close()
  }
  redis?.disconnect()
  console.log(
    `\nguard.client() vs a plain openai client, one process, ${IN_FLIGHT} calls in flight; ${RUNS} runs of ${ROUNDS} alternating ` +
      `rounds of ${CALLS} calls per client; added CPU = guarded - plain, per call, median of the runs\n`,
  )
  console.table(rows)
  if (!redis) console.log('Redis row skipped: redis-server is not installed.')
  console.log(
    "Goals (issue 12): added CPU per call <= 10 µs on memory, <= 30 µs on Redis, median of the runs. The 'memory + metrics' " +
      "row has no goal of its own: metrics' cost is its added figure minus the memory row's. This separates the guard's own " +
      "cost from a framework's (`pnpm bench http`).",
  )
} finally {
  sim.kill('SIGTERM')
  await redisServer?.stop()
}
