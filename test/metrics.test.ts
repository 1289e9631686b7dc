/**
 * Prometheus metrics (issue 13 item 1) against the simulator, with a real prom-client registry:
 * a known sequence of calls shows up in every counter with the right labels; the Express handler
 * and the Koa middleware answer the text exposition format; no user id or API key appears in it;
 * a guard without `metrics` never loads prom-client (checked in a child process on the built CJS).
 */
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import express from 'express'
import Koa from 'koa'
import { Registry } from 'prom-client'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, isQwenGuardError, type Guard, type GuardEvent } from '../packages/core/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'
import { startSimulator, type Simulator } from '../packages/simulator/src/index.js'

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
    Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l),
  )
  return found?.value
}

describe('guard metrics', () => {
  it('counts a known sequence: admitted, refused by the user rpm, an upstream 500 retried, tokens', async () => {
    const registry = new Registry()
    const guard = metricGuard(registry)
    const settled: Array<Extract<GuardEvent, { type: 'settled' }>> = []
    guard.on('settled', (e) => settled.push(e))
    const client = guard.client({ user: USER, key: API_KEY_ID })
    sim.inject({ kind: 'internal-error', times: 1 }) // the first call's first attempt: 500, retried
    await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 20 })
    await client.chat.completions.create({ model: 'qwen-plus', messages, max_tokens: 20 })
    const refused = await client.chat.completions
      .create({ model: 'qwen-plus', messages, max_tokens: 20 })
      .catch((e: unknown) => e)
    expect(isQwenGuardError(refused)).toBe(true)
    await guard.metrics().scrape() // prom-client loaded

    expect(await value(registry, 'qwen_guard_decisions_total', { outcome: 'admitted' })).toBe(2)
    expect(
      await value(registry, 'qwen_guard_decisions_total', { scope: 'user', dimension: 'rpm', outcome: 'refused' }),
    ).toBe(1)
    expect(
      await value(registry, 'qwen_guard_upstream_requests_total', {
        account: ACCOUNT,
        model: 'qwen-plus',
        outcome: 'answered',
      }),
    ).toBe(2)
    expect(
      await value(registry, 'qwen_guard_upstream_requests_total', {
        account: ACCOUNT,
        model: 'qwen-plus',
        outcome: 'server',
      }),
    ).toBe(1)
    expect(await value(registry, 'qwen_guard_upstream_refusals_total', { model: 'qwen-plus', code: 'server' })).toBe(1)
    expect(await value(registry, 'qwen_guard_queue_wait_seconds', { le: '+Inf' })).toBe(2)
    expect(await value(registry, 'qwen_guard_store_up')).toBe(1)

    // Tokens: from the two settled calls, and they balance.
    await new Promise((resolve) => setTimeout(resolve, 20)) // JSON answers settle without being awaited
    expect(settled).toHaveLength(2)
    const reserved = settled.reduce((sum, e) => sum + e.reservedTokens, 0)
    const used = settled.reduce((sum, e) => sum + e.usedTokens, 0)
    expect(used).toBeGreaterThan(0)
    expect(await value(registry, 'qwen_guard_tokens_total', { kind: 'reserved' })).toBe(reserved)
    expect(await value(registry, 'qwen_guard_tokens_total', { kind: 'settled' })).toBe(used)
    const refunded = (await value(registry, 'qwen_guard_tokens_total', { kind: 'refunded' }))!
    const extra = (await value(registry, 'qwen_guard_tokens_total', { kind: 'charged_extra' }))!
    expect(reserved - refunded + extra).toBe(used)

    // Overhead: only the call answered at its first attempt; utilisation: the lane has been used.
    const overhead = await registry.getSingleMetricAsString('qwen_guard_overhead_seconds')
    expect(overhead).toMatch(/^qwen_guard_overhead_seconds_count 1$/m)
    const ratio = (await value(registry, 'qwen_guard_upstream_utilisation_ratio', {
      account: ACCOUNT,
      model: 'qwen-plus',
      dimension: 'busiest',
    }))!
    expect(ratio).toBeGreaterThan(0)

    const text = (await guard.metrics().scrape()).body
    for (const secret of [USER, API_KEY_ID, KEY]) expect(text).not.toContain(secret)
    await guard.close()
  })

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
