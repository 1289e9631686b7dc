/**
 * The usage report on Redis: several guards on one Redis add up into one report (their requests,
 * tokens, and the busiest second summed over both, equal to what the simulator saw), and the
 * `qwen-guard report` command reads the same report from the Redis URL alone, end to end (the
 * built bin in a child process against the run's redis-server).
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { afterEach, expect, it } from 'vitest'
import { createGuard, type Guard, type UsageReport } from '../../src/index.js'
import { describeRedis, redisClient, redisUrl } from '../../../../test/support/redis.js'
import { burst, moveTo, reportLanes, simLanes, T0 } from './support.js'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()))
})

const bin = fileURLToPath(new URL('../../bin/qwen-guard.js', import.meta.url))

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

describeRedis('usage report on Redis', () => {
  const { redis, prefix } = redisClient()
  const { redis: redis2 } = redisClient()

  function guardFor(sim: Simulator, client: typeof redis): Guard {
    const guard = createGuard({
      upstream: { baseURL: sim.url, accounts: [{ id: 'main', apiKey: 'sk-main' }], rampUp: false },
      models: { 'qwen-plus': { rpm: 60_000, tpm: 100_000_000 } },
      store: { redis: client, prefix },
      usage: { now: () => T0 + sim.now() },
    })
    open.push(guard)
    return guard
  }

  it('two guards on one Redis add up: one report, peaks per second summed over both, equal to stats(); the CLI prints the same', async () => {
    const sim = await startSimulator({ timeScale: 1, burst: false, accounts: [{ id: 'main', keys: ['sk-main'] }] })
    open.push(sim)
    const one = guardFor(sim, redis)
    const two = guardFor(sim, redis2)
    // [minute, second, calls from guard one, calls from guard two, max_tokens]
    const schedule: Array<[number, number, number, number, number]> = [
      [0, 3, 2, 3, 10], // the busiest second: 5 calls, from two instances
      [0, 4, 1, 0, 30],
      [2, 30, 0, 4, 7],
    ]
    for (const [minute, second, fromOne, fromTwo, maxTokens] of schedule) {
      moveTo(sim, minute * 60_000 + second * 1_000)
      const start = sim.now()
      await Promise.all([burst(one, fromOne, maxTokens), burst(two, fromTwo, maxTokens)])
      expect(sim.now() - start, 'a burst stays inside its simulated second').toBeLessThan(850)
    }
    const period = { from: T0, to: T0 + 3 * 60_000 }
    const fromOne = await one.usageReport(period)
    // Guard two has written everything it recorded once its report returns; then guard one reads both.
    const fromTwo = await two.usageReport(period)
    expect(reportLanes(fromTwo.lanes)).toEqual(simLanes(sim))
    const again = await one.usageReport(period)
    expect(again.lanes).toEqual(fromTwo.lanes)
    expect(again.lanes[0]!.peaks.requestsPerSecond.value).toBe(5)
    expect(fromOne.lanes[0]!.limits).toEqual({ rpm: 60_000, tpm: 100_000_000, rps: 1_000, tps: 100_000_000 / 60 })

    // The command reads the same report from the URL (no guard, no configuration).
    const json = await run([
      'report',
      '--redis',
      redisUrl,
      '--prefix',
      prefix,
      '--from',
      new Date(T0).toISOString(),
      '--to',
      String(T0 + 3 * 60_000),
      '--json',
    ])
    expect(json.stderr).toBe('')
    expect(json.code).toBe(0)
    const printed = JSON.parse(json.stdout) as UsageReport
    expect(printed.lanes).toEqual(again.lanes)
    expect(printed).toMatchObject({ from: T0, to: T0 + 3 * 60_000, unrecorded: 0 })

    const text = await run(['report', '--redis', redisUrl, '--prefix', prefix, '--from', String(T0), '--last', '1h'])
    expect(text.code).toBe(2)
    expect(text.stderr).toContain('--last and --from exclude each other')

    const table = await run([
      'report',
      '--redis',
      redisUrl,
      '--prefix',
      prefix,
      '--from',
      String(T0),
      '--to',
      String(T0 + 180_000),
    ])
    expect(table.code).toBe(0)
    const row = table.stdout.split('\n').find((line) => line.startsWith('main'))
    expect(row).toMatch(/^main\s+qwen-plus\s+10\s+/) // 10 requests
    expect(row).toContain('5 / 1,000 (0.5 %)') // the busiest second against rps
    expect(table.stdout).toContain('2026-01-01')
  })

  it("upstream refusals by code and fallbacks are kept on Redis too, equal to the simulator's counts", async () => {
    const sim = await startSimulator({ timeScale: 1, burst: false, limits: { 'qwen3-max': { rpm: 60 } } })
    open.push(sim)
    const { redis: client, prefix: own } = redisClient()
    const guard = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false, maxAttempts: 3 },
      models: { 'qwen3-max': { rpm: 6_000, fallback: ['qwen-plus'] } },
      store: { redis: client, prefix: own },
      usage: { now: () => T0 + sim.now() },
    })
    open.push(guard)
    moveTo(sim, 2_000)
    await Promise.allSettled(
      Array.from({ length: 4 }, (_, i) =>
        guard
          .client({ user: `u${i}` })
          .chat.completions.create({ model: 'qwen3-max', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 }),
      ),
    )
    const report = await guard.usageReport({ from: T0, to: T0 + 60_000 })
    const stats = sim.stats().accounts.default!
    const max = report.lanes.find((lane) => lane.model === 'qwen3-max')!
    const plus = report.lanes.find((lane) => lane.model === 'qwen-plus')!
    expect(max.refusals.byCode).toEqual(stats['qwen3-max']!.refused)
    expect(max.refusals.total).toBeGreaterThan(0)
    expect(max.atLimit.minutes).toBe(1)
    expect(plus.fallbacks).toBe(stats['qwen-plus']!.accepted)
    expect(report.unrecorded).toBe(0)
  })

  it('the command fails with exit code 1 and a masked URL when Redis cannot be reached', async () => {
    const result = await run(['report', '--redis', 'redis://:hunter2@127.0.0.1:1', '--last', '1h'])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('cannot reach Redis at redis://:***@127.0.0.1:1')
    expect(result.stderr).not.toContain('hunter2')
  })
})
