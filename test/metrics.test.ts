/**
 * Prometheus metrics (issue 13 item 1) against the simulator, with a real prom-client registry:
 * a known sequence of calls (a retried 500, a user-rpm refusal, a shadow refusal, a queued call)
 * shows up in every metric with exact values (tokens settled = the simulator's own count);
 * store_up follows a real Redis paused and resumed; the Express handler
 * and the Koa middleware answer the text exposition format; no user id or API key appears in it;
 * a guard without `metrics` never loads prom-client (checked in a child process on the built CJS).
 */
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import express from 'express'
import Koa from 'koa'
import { Redis } from 'ioredis'
import { Registry } from 'prom-client'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, isQwenGuardError, type Guard, type GuardEvent } from '../packages/core/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'
import { startSimulator, type Simulator } from '../packages/simulator/src/index.js'
import { redisServerInstalled, startRedisServer } from './support/redis-server.js'

const KEY = 'sk-metrics-secret-key-5d1e7c'
const ACCOUNT = 'acct-metrics'
const USER = 'user-metrics-private-42'
const API_KEY_ID = 'tenant-key-private-77'
const messages = [{ role: 'user' as const, content: 'hello' }]

let sim: Simulator
beforeAll(async () => {
  sim = await startSimulator({ accounts: [{ id: ACCOUNT, keys: [KEY] }] })
})
afterAll(() => sim.close())

function metricGuard(registry?: Registry): Guard {
  return createGuard({
    upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
    quotas: { user: { rpm: 2 } },
    metrics: registry ? { registry } : true,
  })
}

async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name)
  if (!metric) throw new Error(`no metric ${name}`)
  const { values } = await metric.get()
  const found = values.find((v) =>
    Object.entries(labels).every(([k, l]) => String((v.labels as Record<string, unknown>)[k]) === l),
  )
  return found?.value
}

describe('guard metrics', () => {
  it('counts a known sequence exactly: every counter, the histogram, the summary and the gauges', async () => {
    const registry = new Registry()
    const guard = createGuard({
      upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
      // Exact limits for the utilisation ratios; qwen-max paced at 1 rps so a second call queues, qwen-plus
      // at 1,000 rps so its spacing (1 ms) never queues a call that follows an answer, however fast it came.
      models: {
        'qwen-plus': { rpm: 600, tpm: 1_000_000, rps: 1_000, tps: 100_000 },
        'qwen-max': { rpm: 600, tpm: 1_000_000, rps: 1, tps: 100_000 },
      },
      quotas: { user: { rpm: 2 }, key: { rpm: 1, mode: 'shadow' } },
      queue: { maxWaitMs: 10_000 },
      metrics: { registry },
    })
    const events: GuardEvent[] = []
    for (const type of ['admitted', 'settled'] as const) guard.on(type, (e) => events.push(e))
    const before = sim.stats()
    const tokensOf = (stats: typeof before, model: string) => stats.accounts[ACCOUNT]?.[model]?.totalTokens ?? 0

    const client = guard.client({ user: USER, key: API_KEY_ID })
    sim.inject({ kind: 'internal-error', times: 1 }) // call 1's first attempt: 500, retried
    await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 20 }) // 1: admitted (key rpm 1/1)
    await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 20 }) // 2: admitted, shadow-refused on key rpm
    const refused = await client.chat.completions // 3: refused by the user rpm
      .create({ model: 'qwen-plus', messages, max_tokens: 20 })
      .catch((e: unknown) => e)
    expect(isQwenGuardError(refused)).toBe(true)
    const other = guard.client({ user: 'another-user' })
    await Promise.all([
      other.chat.completions.create({ model: 'qwen-max', messages, max_tokens: 20 }), // 4
      other.chat.completions.create({ model: 'qwen-max', messages, max_tokens: 20 }), // 5: queued ~1 s
    ])
    await new Promise((resolve) => setTimeout(resolve, 30)) // JSON answers settle without being awaited
    await guard.metrics().scrape() // prom-client loaded

    // decisions_total: every label set that exists, each exact.
    const decisions = await registry.getSingleMetric('qwen_guard_decisions_total')!.get()
    const byLabels = Object.fromEntries(
      decisions.values.map((v) => [`${v.labels.scope}/${v.labels.dimension}/${v.labels.outcome}`, v.value]),
    )
    expect(byLabels).toEqual({
      'all/none/admitted': 4,
      'user/rpm/refused': 1,
      'key/rpm/shadow_refused': 1,
      'upstream/none/queued': 2, // call 5, and call 1's retry (the 500 cooled the lane)
    })

    // Upstream requests and refusals, per account x model.
    const requests = await registry.getSingleMetric('qwen_guard_upstream_requests_total')!.get()
    expect(
      Object.fromEntries(
        requests.values.map((v) => [`${v.labels.account}/${v.labels.model}/${v.labels.outcome}`, v.value]),
      ),
    ).toEqual({
      [`${ACCOUNT}/qwen-plus/answered`]: 2,
      [`${ACCOUNT}/qwen-plus/server`]: 1,
      [`${ACCOUNT}/qwen-max/answered`]: 2,
    })
    const refusals = await registry.getSingleMetric('qwen_guard_upstream_refusals_total')!.get()
    expect(refusals.values.map((v) => [v.labels.model, v.labels.code, v.value])).toEqual([['qwen-plus', 'server', 1]])

    // Queue wait: four admitted calls; call 5 waited about a second for qwen-max's pace, call 1's
    // retry waited for its lane's cooldown after the 500 (how long depends on the backoff drawn).
    expect(await value(registry, 'qwen_guard_queue_wait_seconds', { le: '+Inf' })).toBe(4)
    const quick = (await value(registry, 'qwen_guard_queue_wait_seconds', { le: '0.25' }))!
    expect(quick).toBeGreaterThanOrEqual(2)
    expect(quick).toBeLessThanOrEqual(3)
    const histogram = await registry.getSingleMetricAsString('qwen_guard_queue_wait_seconds')
    expect(Number(/^qwen_guard_queue_wait_seconds_sum (\S+)$/m.exec(histogram)![1])).toBeGreaterThan(0.3)

    // Tokens: reserved from the admitted events, settled equal to what the simulator counted.
    const admitted = events.filter((e): e is Extract<GuardEvent, { type: 'admitted' }> => e.type === 'admitted')
    const settled = events.filter((e): e is Extract<GuardEvent, { type: 'settled' }> => e.type === 'settled')
    expect(settled).toHaveLength(4)
    const after = sim.stats()
    const simTokens =
      tokensOf(after, 'qwen-plus') -
      tokensOf(before, 'qwen-plus') +
      tokensOf(after, 'qwen-max') -
      tokensOf(before, 'qwen-max')
    expect(simTokens).toBeGreaterThan(0)
    expect(await value(registry, 'qwen_guard_tokens_total', { kind: 'reserved' })).toBe(
      admitted.reduce((sum, e) => sum + e.reservedTokens, 0),
    )
    expect(await value(registry, 'qwen_guard_tokens_total', { kind: 'settled' })).toBe(simTokens)
    expect(await value(registry, 'qwen_guard_tokens_total', { kind: 'refunded' })).toBe(
      settled.reduce((sum, e) => sum + Math.max(0, e.reservedTokens - e.usedTokens), 0),
    )
    expect(await value(registry, 'qwen_guard_tokens_total', { kind: 'charged_extra' })).toBe(
      settled.reduce((sum, e) => sum + Math.max(0, e.usedTokens - e.reservedTokens), 0),
    )

    // Utilisation, per dimension: requests in the minute over rpm (the 500 counts: it reached Qwen).
    const ratio = async (model: string, dimension: string) =>
      (await value(registry, 'qwen_guard_upstream_utilisation_ratio', { account: ACCOUNT, model, dimension }))!
    expect(await ratio('qwen-plus', 'rpm')).toBeCloseTo(3 / 600, 9)
    expect(await ratio('qwen-max', 'rpm')).toBeCloseTo(2 / 600, 9)
    expect(await ratio('qwen-plus', 'tpm')).toBeGreaterThanOrEqual(
      (tokensOf(after, 'qwen-plus') - tokensOf(before, 'qwen-plus')) / 1_000_000,
    )
    for (const model of ['qwen-plus', 'qwen-max']) {
      for (const dimension of ['rps', 'tps']) {
        const r = await ratio(model, dimension)
        expect(r).toBeGreaterThanOrEqual(0)
        expect(r).toBeLessThanOrEqual(model === 'qwen-max' && dimension === 'rps' ? 2 : 0.03)
      }
    }
    // Lanes never used report 0, not nothing.
    expect(await ratio('qwen-flash', 'rpm')).toBe(0)

    // Overhead: one observation per answered call (the retried one too), each a guard's own time.
    const overhead = await registry.getSingleMetricAsString('qwen_guard_overhead_seconds')
    expect(overhead).toMatch(/^qwen_guard_overhead_seconds_count 4$/m)
    const overheadSum = Number(/^qwen_guard_overhead_seconds_sum (\S+)$/m.exec(overhead)![1])
    expect(overheadSum).toBeGreaterThan(0)
    // Far below the ~1 s queue wait and the retry's backoff: those waits are not the guard's time.
    expect(overheadSum).toBeLessThan(0.5)
    expect(await value(registry, 'qwen_guard_store_up')).toBe(1)

    const text = (await guard.metrics().scrape()).body
    for (const secret of [USER, API_KEY_ID, KEY]) expect(text).not.toContain(secret)
    await guard.close()
  })

  it.skipIf(!redisServerInstalled())(
    'store_up follows a Redis outage: 0 while paused, 1 once it answers again',
    async () => {
      const server = await startRedisServer()
      const redis = new Redis(server.url)
      redis.on('error', () => undefined)
      const registry = new Registry()
      const guard = createGuard({
        upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
        quotas: { user: { rpm: 1_000 } },
        store: { redis, prefix: 'metrics-outage', onError: 'open', commandTimeoutMs: 200 },
        metrics: { registry },
      })
      try {
        const client = guard.client({ user: USER })
        await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 8 })
        await guard.metrics().scrape()
        expect(await value(registry, 'qwen_guard_store_up')).toBe(1)
        process.kill(server.pid, 'SIGSTOP')
        await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 8 }) // served: 'open'
        expect(await value(registry, 'qwen_guard_store_up')).toBe(0)
        process.kill(server.pid, 'SIGCONT')
        let up = 0
        for (let i = 0; i < 10 && up !== 1; i++) {
          await new Promise((resolve) => setTimeout(resolve, 400)) // one probe a second
          await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 8 })
          up = (await value(registry, 'qwen_guard_store_up'))!
        }
        expect(up).toBe(1)
      } finally {
        await guard.close()
        redis.disconnect()
        await server.stop()
      }
    },
  )

  it('the Node handler answers 200 text/plain exposition format as an Express route', async () => {
    const guard = metricGuard()
    await guard.client({ user: USER }).chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 8 })
    const app = express()
    app.get('/metrics', guard.metrics())
    const res = await request(app).get('/metrics')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    for (const name of [
      'decisions_total',
      'queue_wait_seconds',
      'upstream_requests_total',
      'upstream_refusals_total',
      'tokens_total',
      'upstream_utilisation_ratio',
      'overhead_seconds',
      'store_up',
    ]) {
      expect(res.text).toContain(`# TYPE qwen_guard_${name}`)
    }
    expect(res.text).toContain('qwen_guard_decisions_total{scope="all",dimension="none",outcome="admitted"} 1')
    for (const secret of [USER, KEY]) expect(res.text).not.toContain(secret)
    await guard.close()
  })

  it('the Koa adapter’s metrics() middleware answers the same', async () => {
    const guarded = koaGuard({
      upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }] },
      metrics: { prefix: 'app_qwen_' },
    })
    await guarded.guard.client({ user: USER }).chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 8 })
    const app = new Koa()
    app.use(guarded.metrics())
    const res = await request(app.callback()).get('/metrics')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(res.text).toContain('app_qwen_decisions_total{scope="all",dimension="none",outcome="admitted"} 1')
    expect(res.text).toContain('# TYPE app_qwen_store_up gauge')
    for (const secret of [USER, KEY]) expect(res.text).not.toContain(secret)
    await guarded.close()
  })

  it('a guard without metrics: guard.metrics() throws a clear error; bad options are refused', async () => {
    const guard = createGuard({ upstream: { baseURL: sim.url, apiKey: KEY } })
    expect(() => guard.metrics()).toThrow(/metrics: true/)
    await guard.close()
    expect(() => createGuard({ upstream: { apiKey: KEY }, metrics: { prefix: 'bad-prefix' } })).toThrow(
      /metrics\.prefix/,
    )
    expect(() => createGuard({ upstream: { apiKey: KEY }, metrics: { registry: {} as never } })).toThrow(
      /metrics\.registry/,
    )
  })

  it('prom-client is loaded only when metrics are on (built CJS and ESM, in a child process)', () => {
    const core = fileURLToPath(new URL('../packages/core/dist/', import.meta.url))
    const cjs = `
      const { createGuard } = require(${JSON.stringify(`${core}index.cjs`)})
      const loaded = () => Object.keys(require.cache).some((file) => file.includes('prom-client'))
      const off = createGuard({ upstream: { apiKey: 'sk-x' } })
      const before = loaded()
      const on = createGuard({ upstream: { apiKey: 'sk-x' }, metrics: true })
      on.metrics().scrape().then(async (scrape) => {
        console.log(JSON.stringify({ before, after: loaded(), type: scrape.contentType }))
        await off.close(); await on.close()
      })`
    const outCjs = JSON.parse(execFileSync(process.execPath, ['-e', cjs], { encoding: 'utf8' })) as Record<
      string,
      unknown
    >
    expect(outCjs).toEqual({ before: false, after: true, type: expect.stringMatching(/^text\/plain/) })
    const esm = `
      const { createGuard } = await import(${JSON.stringify(`${core}index.js`)})
      const guard = createGuard({ upstream: { apiKey: 'sk-x' }, metrics: true })
      const scrape = await guard.metrics().scrape()
      console.log(JSON.stringify({ ok: scrape.body.includes('# TYPE qwen_guard_store_up gauge') }))
      await guard.close()`
    const outEsm = JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', esm], { encoding: 'utf8' }),
    ) as Record<string, unknown>
    expect(outEsm).toEqual({ ok: true })
  })
})
