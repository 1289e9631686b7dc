/**
 * One master of a Redis Cluster full (maxmemory, noeviction): every write to it is refused OOM (an
 * outage by docs/quotas.md). The store's background probe of a node in an outage was a read (EXISTS),
 * which a full node still answers: the probe ended the outage every second and the next write began
 * another. It is a write now. (Written by an attack on the guard; failed before the fix.)
 */
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard } from '@qwen-guard/core'
import { identityTag } from '../packages/core/src/quota/plan.js'
import { startRedisCluster, type RedisCluster } from './support/redis-cluster.js'
import { redisServerInstalled } from './support/redis-server.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe.skipIf(!redisServerInstalled())('Redis Cluster: one master full (OOM on every write)', () => {
  let cluster: RedisCluster
  let sim: Simulator
  beforeAll(async () => {
    cluster = await startRedisCluster()
    sim = await startSimulator({ burst: false })
  }, 30_000)
  afterAll(async () => {
    await sim?.close()
    await cluster?.stop()
  })

  it("'closed': one store_error for the fault, no store_recovered while every write to the node is still refused", async () => {
    const prefix = 'oomc'
    const client = cluster.client()
    const guard = createGuard({
      upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
      quotas: { user: { rpm: 1_000 } },
      store: { redis: client, prefix, onError: 'closed' },
    })
    const events: string[] = []
    guard.on('store_error', () => events.push('store_error'))
    guard.on('store_recovered', () => events.push('store_recovered'))
    const laneNode = cluster.nodes.indexOf(await cluster.nodeOf(`${prefix}:up:{default|qwen-plus}:h`))
    const queueNode = cluster.nodes.indexOf(await cluster.nodeOf(`${prefix}:fq:{qwen-plus}:z`))
    const full = [0, 1, 2].find((i) => i !== laneNode && i !== queueNode)
    if (full === undefined) return
    let user = ''
    for (let i = 0; !user; i++) {
      if ((await cluster.nodeOf(identityTag('user', `u${i}`))).port === cluster.nodes[full]!.port) user = `u${i}`
    }
    const call = async () => {
      try {
        const answer = await guard.call({ user }, { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] })
        await answer.response.text()
        return 200
      } catch (error) {
        return (error as { status?: number }).status ?? 0
      }
    }
    const admin = new Redis({ host: '127.0.0.1', port: cluster.nodes[full]!.port })
    try {
      expect(await call()).toBe(200)
      // The node fills past maxmemory (keys of the user's slot, so they land on it).
      const fill = client.pipeline()
      for (let i = 0; i < 4_000; i++) fill.set(`junk:${i}:${identityTag('user', user)}`, 'x'.repeat(1000))
      await fill.exec()
      await admin.config('SET', 'maxmemory-policy', 'noeviction')
      await admin.config('SET', 'maxmemory', '2mb')
      const statuses: number[] = []
      for (let i = 0; i < 3; i++) {
        statuses.push(await call())
        await sleep(1_200) // the node's background probe runs once a second
      }
      expect(statuses).toEqual([503, 503, 503])
      // Still full: one outage. Fails: ['store_error', 'store_recovered', 'store_error', 'store_recovered', ...]
      expect(events).toEqual(['store_error'])
    } finally {
      await admin.config('SET', 'maxmemory', '0').catch(() => undefined)
      admin.disconnect()
      await guard.close()
    }
  }, 30_000)
})
