// `pnpm bench admission`: admission + settlement decisions per second in one process, on the memory
// store and on a redis-server on loopback (started here). A decision = QuotaAdmission.reserve +
// reservation.settle for a user limited by rpm, tpm and concurrency; users vary over a large set.
import { cpus, loadavg } from 'node:os'
import { Redis } from 'ioredis'
import { QuotaAdmission } from '../packages/core/src/quota/index.js'
import type { ResolvedOptions } from '../packages/core/src/types.js'
import { redisServerInstalled, startRedisServer } from '../test/support/redis-server.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const ROUNDS = 3
const USERS = 20_000
const POLICY = { user: { rpm: 600, tpm: 1_000_000, concurrency: 8 } }

interface Result {
  store: string
  inFlight: number
  decisions: number
  refused: number
  perSecond: number
  /** Decisions per CPU-second of this process (less sensitive to other load on a shared machine). */
  perCpuSecond: number
  goal: number
  /** decisions/s of every round, slowest first. */
  all: number[]
}

function options(redis: Redis | undefined, prefix: string): ResolvedOptions {
  // Only what admission reads; the rest of ResolvedOptions is irrelevant here.
  return {
    quotas: async () => POLICY,
    store: { redis: redis as unknown as ResolvedOptions['store']['redis'], prefix, onError: 'closed' },
    upstream: { timeoutMs: 120_000 },
  } as unknown as ResolvedOptions
}

/** Runs decisions with `inFlight` concurrent callers until `end`; returns [decisions, refused]. */
async function drive(admission: QuotaAdmission, inFlight: number, ms: number): Promise<[number, number]> {
  let decisions = 0
  let refused = 0
  let next = 0
  const end = Date.now() + ms
  const worker = async () => {
    while (Date.now() < end) {
      next = (next + 7_919) % USERS // a prime stride: consecutive decisions hit different users
      try {
        const reservation = await admission.reserve({ user: `u${next}` }, { requests: 1, tokens: 1_200, usd: 0 })
        await reservation.settle({ tokens: 300, usd: 0 })
      } catch {
        refused += 1
      }
      decisions += 1
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
  return [decisions, refused]
}

/**
 * A warm-up (JIT, Lua script loading), then ROUNDS timed rounds; the median round is reported, so
 * one round disturbed by another process on a shared machine does not decide the result.
 */
async function run(store: string, admission: QuotaAdmission, inFlight: number, goal: number): Promise<Result> {
  await drive(admission, inFlight, 1_000)
  const rounds: Array<{ decisions: number; refused: number; perSecond: number; perCpuSecond: number }> = []
  for (let i = 0; i < ROUNDS; i += 1) {
    const started = performance.now()
    const cpu = process.cpuUsage()
    const [decisions, refused] = await drive(admission, inFlight, (SECONDS * 1_000) / ROUNDS)
    const used = process.cpuUsage(cpu)
    rounds.push({
      decisions,
      refused,
      perSecond: Math.round(decisions / ((performance.now() - started) / 1_000)),
      perCpuSecond: Math.round(decisions / ((used.user + used.system) / 1e6)),
    })
  }
  await admission.close()
  rounds.sort((a, b) => a.perSecond - b.perSecond)
  const median = rounds[Math.floor(rounds.length / 2)] as (typeof rounds)[number]
  return { store, inFlight, ...median, goal, all: rounds.map((r) => r.perSecond) }
}

const results: Result[] = []
results.push(
  await run('memory', new QuotaAdmission({ options: options(undefined, 'bench'), emit: () => {} }), 64, 50_000),
)

if (redisServerInstalled()) {
  const server = await startRedisServer()
  const redis = new Redis(server.url)
  try {
    const admission = new QuotaAdmission({ options: options(redis, `bench${Date.now()}`), emit: () => {} })
    results.push(await run('redis (loopback)', admission, 64, 5_000))
  } finally {
    redis.disconnect()
    await server.stop()
  }
} else {
  console.log('redis-server not installed: the Redis row is skipped')
}

console.log(
  `\nadmission + settlement decisions per second (${ROUNDS} rounds in ${SECONDS} s per store, ${USERS} users, policy ${JSON.stringify(POLICY.user)})\n`,
)
console.log(
  '| store | in flight | decisions (median round) | refused | decisions/s (median) | rounds | per CPU-second | goal | result |',
)
console.log('|---|---:|---:|---:|---:|---|---:|---:|---|')
for (const r of results) {
  const pass = r.perSecond >= r.goal ? 'PASS' : 'FAIL'
  console.log(
    `| ${r.store} | ${r.inFlight} | ${r.decisions} | ${r.refused} | ${r.perSecond.toLocaleString('en')} | ${r.all.join(' / ')} | ${r.perCpuSecond.toLocaleString('en')} | >= ${r.goal.toLocaleString('en')} | ${pass} |`,
  )
}
console.log(
  `\nload average while running: ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')} on ${cpus().length} CPUs (decisions/s is wall clock: other load lowers it)`,
)
if (results.some((r) => r.perSecond < r.goal)) process.exitCode = 1
