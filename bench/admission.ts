// `pnpm bench admission`: admission + settlement decisions per second in one process, on the memory
// store and on a redis-server on loopback (started here). A decision = QuotaAdmission.reserve +
// reservation.settle for a user limited by rpm, tpm and concurrency; users vary over a large set.
import { Redis } from 'ioredis'
import { QuotaAdmission } from '../packages/core/src/quota.js'
import type { ResolvedOptions } from '../packages/core/src/types.js'
import { redisServerInstalled, startRedisServer } from '../test/support/redis-server.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const USERS = 20_000
const POLICY = { user: { rpm: 600, tpm: 1_000_000, concurrency: 8 } }

interface Result {
  store: string
  inFlight: number
  decisions: number
  refused: number
  perSecond: number
  goal: number
}

function options(redis: Redis | undefined, prefix: string): ResolvedOptions {
  // Only what admission reads; the rest of ResolvedOptions is irrelevant here.
  return {
    quotas: async () => POLICY,
    store: { redis: redis as unknown as ResolvedOptions['store']['redis'], prefix, onError: 'closed' },
    upstream: { timeoutMs: 120_000 },
  } as unknown as ResolvedOptions
}

async function run(store: string, admission: QuotaAdmission, inFlight: number, goal: number): Promise<Result> {
  let decisions = 0
  let refused = 0
  let next = 0
  const end = Date.now() + SECONDS * 1_000
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
  const started = performance.now()
  await Promise.all(Array.from({ length: inFlight }, worker))
  const elapsed = (performance.now() - started) / 1_000
  await admission.close()
  return { store, inFlight, decisions, refused, perSecond: Math.round(decisions / elapsed), goal }
}

const results: Result[] = []
results.push(await run('memory', new QuotaAdmission({ options: options(undefined, 'bench'), emit: () => {} }), 64, 50_000))

if (redisServerInstalled()) {
  const server = await startRedisServer()
  const redis = new Redis(server.url)
  try {
    const admission = new QuotaAdmission({ options: options(redis, `bench${Date.now()}`), emit: () => {} })
    results.push(await run('redis (loopback)', admission, 256, 5_000))
  } finally {
    redis.disconnect()
    await server.stop()
  }
} else {
  console.log('redis-server not installed: the Redis row is skipped')
}

console.log(`\nadmission + settlement decisions per second (${SECONDS} s per store, ${USERS} users, policy ${JSON.stringify(POLICY.user)})\n`)
console.log('| store | in flight | decisions | refused | decisions/s | goal | result |')
console.log('|---|---:|---:|---:|---:|---:|---|')
for (const r of results) {
  const pass = r.perSecond >= r.goal ? 'PASS' : 'FAIL'
  console.log(`| ${r.store} | ${r.inFlight} | ${r.decisions} | ${r.refused} | ${r.perSecond.toLocaleString('en')} | >= ${r.goal.toLocaleString('en')} | ${pass} |`)
}
if (results.some((r) => r.perSecond < r.goal)) process.exitCode = 1
