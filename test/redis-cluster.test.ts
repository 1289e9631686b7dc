/**
 * The guard on a real 3-node Redis Cluster (test/support/redis-cluster.ts: Debian's redis-server in
 * cluster mode on loopback), through ioredis `Cluster` clients: the key layout keeps every
 * multi-key script in one slot and spreads identities over the nodes; quota admission is all or
 * nothing and never over-admits under concurrency from two clients; concurrency leases are
 * acquired, renewed, released and expire; the upstream meter paces two pools sharing the cluster
 * with 0 upstream 429s from the simulator; the socket corking covers every node; and a node
 * stalled with SIGSTOP gets every call answered by the store's failure policy in bounded time.
 */
import type { Socket } from 'node:net'
import { startSimulator, countPromptTokens, type Simulator } from '@qwen-guard/simulator'
import type { Cluster } from 'ioredis'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest'
import { createGuard, type Guard, type GuardEvent, type GuardOptions } from '@qwen-guard/core'
import { QuotaAdmission } from '../packages/core/src/quota/admission.js'
import { createRedisLeaseStore, type LeaseStore } from '../packages/core/src/quota/lease.js'
import { identityTag, planFor } from '../packages/core/src/quota/plan.js'
import { coalesceWrites } from '../packages/core/src/redis-writes.js'
import { createGuardStore, PROBE_INTERVAL_MS } from '../packages/core/src/store.js'
import { isQwenGuardError } from '../packages/core/src/errors.js'
import { classifyRefusal } from '../packages/core/src/upstream/classify.js'
import { cost, dim, refusalOf, resolvedFor } from '../packages/core/test/quota/support.js'
import { makePool } from '../packages/core/test/upstream/support.js'
import { startRedisCluster, type RedisCluster } from './support/redis-cluster.js'
import { redisServerInstalled } from './support/redis-server.js'

// Like the single-server suites: skipped only without redis-server, never under CI=true.
const describeCluster = describe.skipIf(!redisServerInstalled() && process.env.CI !== 'true')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
/** A call's answer within the store's 500 ms command timeout, with room for a loaded 2-core machine. */
const ANSWER_BOUND_MS = 1_500

describeCluster('the guard on a 3-node Redis Cluster', () => {
  let cluster: RedisCluster
  let a: Cluster
  let b: Cluster
  /** One user id whose keys live on each node (index = node index). */
  let usersByNode: string[]
  let startMs = 0

  beforeAll(async () => {
    const started = performance.now()
    cluster = await startRedisCluster()
    startMs = performance.now() - started
    console.log(`[redis-cluster] 3 nodes ready in ${startMs.toFixed(0)} ms`)
    a = cluster.client()
    b = cluster.client()
    // The hash tag alone decides the slot: find a user per node.
    usersByNode = []
    for (let i = 0; usersByNode.filter(Boolean).length < 3; i += 1) {
      const node = await cluster.nodeOf(identityTag('user', `u${i}`))
      const index = cluster.nodes.indexOf(node)
      usersByNode[index] ??= `u${i}`
    }
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  // A bound for a hung start, not a speed goal: on a busy 2-core machine (CI beside other work) three
  // redis-servers and the cluster's slot assignment took 13 s once.
  it('starts within 45 s', () => {
    expect(startMs).toBeLessThan(45_000)
  })

  describe('key layout', () => {
    it("puts every key of one identity in one slot, and a lane's meter hash and log in one slot", async () => {
      const prefix = 'layout'
      const plan = planFor({ user: 'alice' }, { user: { concurrency: 2 } }, prefix)
      const lease = plan.leases[0]?.key ?? ''
      expect(lease).toBe('layout:user:concurrency:{user:alice}')
      // What rate-limiter-flexible and the lease script store (docs/quotas.md), and the meter's keys
      // (upstream/pool.ts): the cluster must agree they share a slot.
      const identityKeys = [
        'layout:user:rpm:{user:alice}',
        'layout:user:tpm:{user:alice}',
        'layout:user:tokensPerDay:{user:alice}:2026-11-30',
        'layout:user:usdPerDay:{user:alice}:2026-11-30',
        lease,
      ]
      const laneKeys = ['layout:up:{acct-a|qwen-plus}:h', 'layout:up:{acct-a|qwen-plus}:l']
      const slot = async (key: string) => Number(await a.call('CLUSTER', 'KEYSLOT', key))
      for (const keys of [identityKeys, laneKeys]) {
        const slots = await Promise.all(keys.map(slot))
        expect(new Set(slots).size).toBe(1)
      }
      // Identities spread over the nodes (found in beforeAll): one per node.
      expect(usersByNode.filter(Boolean)).toHaveLength(3)
    })

    it('a real guard call writes its keys only where the layout says (one node per identity, one per lane)', async () => {
      const sim = await startSimulator({ burst: false })
      const prefix = 'call'
      const guard = createGuard({
        upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
        quotas: { user: { rpm: 100, tpm: 100_000, tokensPerDay: 1_000_000, concurrency: 2 } },
        store: { redis: a, prefix },
      })
      try {
        for (const user of usersByNode) {
          const answer = await guard.call({ user }, { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] })
          await answer.response.text()
        }
        // Every key the calls left, node by node (SCAN on each master).
        const where = new Map<string, number>()
        const masters = a.nodes('master')
        for (const node of masters) {
          const port = Number(node.options.port)
          const keys = await node.keys(`${prefix}:*`)
          for (const key of keys) where.set(key, port)
        }
        const tags = new Map<string, Set<number>>()
        for (const [key, port] of where) {
          const tag = /\{[^}]*\}/.exec(key)?.[0]
          expect(tag, `${key} has no hash tag`).toBeDefined()
          tags.set(tag!, (tags.get(tag!) ?? new Set()).add(port))
        }
        for (const user of usersByNode) {
          expect(where.get(`${prefix}:user:rpm:{user:${user}}`)).toBeDefined()
          expect(where.get(`${prefix}:user:tpm:{user:${user}}`)).toBeDefined()
        }
        for (const [tag, ports] of tags) expect(ports.size, `${tag} spans nodes`).toBe(1)
        const usedNodes = new Set([...where.values()])
        expect(usedNodes.size).toBe(3) // the identities were spread over all three nodes
      } finally {
        await guard.close()
        await sim.close()
      }
    })
  })

  describe('the client', () => {
    it('a lazyConnect Cluster is connected by the guard and its first call is served from the cluster', async () => {
      const sim = await startSimulator({ burst: false })
      const lazy = cluster.client({ lazyConnect: true })
      expect(lazy.status).toBe('wait')
      const guard = createGuard({
        upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
        quotas: { user: { rpm: 100 } },
        store: { redis: lazy, prefix: 'lazy', onError: 'closed' },
      })
      try {
        const answer = await guard.call(
          { user: 'alice' },
          { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] },
        )
        await answer.response.text()
        expect(await a.get('lazy:user:rpm:{user:alice}')).toBe('1')
      } finally {
        await guard.close()
        await sim.close()
      }
    })

    it('a Cluster with enableAutoPipelining is refused like a Redis with it', () => {
      const piped = cluster.client({ enableAutoPipelining: true, lazyConnect: true })
      expect(() => createGuard({ upstream: { apiKey: 'sk-unused' }, store: { redis: piped } })).toThrow(
        /enableAutoPipelining/,
      )
    })
  })

  describe('quotas', () => {
    const admissions: QuotaAdmission[] = []
    let n = 0
    const make = (client: Cluster, quotas: Parameters<typeof resolvedFor>[0], prefix = `q${(n += 1)}`) => {
      const admission = new QuotaAdmission({
        options: resolvedFor(quotas, { redis: client as never, prefix, onError: 'closed' }),
        emit: () => undefined,
      })
      admissions.push(admission)
      return admission
    }
    afterAll(async () => {
      await Promise.all(admissions.map((admission) => admission.close()))
    })

    it('all or nothing: a tpm refusal leaves the rpm count and the lease as they were, on every node', async () => {
      const admission = make(a, { user: { rpm: 10, tpm: 1_000, concurrency: 3 } })
      for (const user of usersByNode) {
        const first = await admission.reserve({ user }, cost(600))
        const error = await refusalOf(admission.reserve({ user }, cost(600)))
        expect(error).toMatchObject({ status: 429, code: 'rate_limit_exceeded', dimension: 'tpm' })
        const state = await admission.state({ user })
        expect(dim(state, 'rpm').remaining).toBe(9)
        expect(dim(state, 'tpm').remaining).toBe(400)
        expect(dim(state, 'concurrency').remaining).toBe(2) // the first call's lease only
        await first.settle({ tokens: 100, usd: 0 })
        const after = await admission.state({ user })
        expect(dim(after, 'tpm').remaining).toBe(900)
        expect(dim(after, 'concurrency').remaining).toBe(3)
      }
    })

    it('60 concurrent reserves from two clients never admit more than the limits', async () => {
      const prefix = `q${(n += 1)}`
      const quotas = { user: { rpm: 10, tpm: 10_000, concurrency: 7 } }
      const one = make(a, quotas, prefix)
      const two = make(b, quotas, prefix)
      for (const user of usersByNode) {
        const settled = await Promise.allSettled(
          Array.from({ length: 60 }, (_, i) => (i % 2 ? one : two).reserve({ user }, cost(100))),
        )
        const admitted = settled.filter((r) => r.status === 'fulfilled')
        const refused = settled.filter((r) => r.status === 'rejected')
        expect(admitted.length).toBeGreaterThan(0)
        expect(admitted.length).toBeLessThanOrEqual(7) // concurrency binds before rpm
        for (const r of refused) expect((r.reason as { status: number }).status).toBe(429)
        const state = await one.state({ user })
        expect(dim(state, 'concurrency').remaining).toBe(7 - admitted.length)
        expect(dim(state, 'rpm').remaining).toBe(10 - admitted.length) // refused calls were rolled back
        await Promise.all(admitted.map((r) => r.value.cancel()))
      }
    })
  })

  describe('concurrency leases', () => {
    const stores: LeaseStore[] = []
    const leasesOn = (client: Cluster) => {
      const store = createRedisLeaseStore(createGuardStore({ redis: client, prefix: 'l', onError: 'closed' }, () => {}))
      stores.push(store)
      return store
    }
    const keyOf = (user: string, name: string) =>
      planFor({ user: `${user}-${name}` }, { user: { concurrency: 1 } }, 'l').leases[0]!.key
    afterAll(() => {
      for (const store of stores) store.close()
    })

    it('acquires up to the limit, refuses beyond with the earliest expiry, frees on release', async () => {
      const leases = leasesOn(a)
      for (const user of usersByNode) {
        const key = keyOf(user, 'basic')
        const first = await leases.acquire(key, 2, 5_000)
        const second = await leases.acquire(key, 2, 5_000)
        expect(first).toMatchObject({ ok: true, count: 1 })
        expect(second).toMatchObject({ ok: true, count: 2 })
        const third = await leases.acquire(key, 2, 5_000)
        expect(third).toMatchObject({ ok: false, count: 2 })
        if (third.ok || !first.ok || !second.ok) throw new Error('unreachable')
        expect(third.nextExpiryMs).toBeGreaterThan(4_000)
        await first.lease.release()
        await first.lease.release() // idempotent
        expect((await leases.count(key)).count).toBe(1)
        await second.lease.release()
        expect(await leases.count(key)).toEqual({ count: 0, nextExpiryMs: 0 })
      }
    })

    it('renews a held lease past its TTL; a lease whose holder died expires', async () => {
      const holder = leasesOn(a)
      const dying = leasesOn(b)
      const other = leasesOn(b)
      const held = await Promise.all(usersByNode.map((user) => holder.acquire(keyOf(user, 'renew'), 1, 150)))
      await Promise.all(usersByNode.map((user) => dying.acquire(keyOf(user, 'died'), 1, 150)))
      dying.close() // its process is gone: nobody renews
      await sleep(500) // more than three TTLs
      for (const user of usersByNode) {
        expect(await other.acquire(keyOf(user, 'renew'), 1, 150)).toMatchObject({ ok: false, count: 1 })
        expect(await other.count(keyOf(user, 'died'))).toEqual({ count: 0, nextExpiryMs: 0 })
      }
      for (const attempt of held) if (attempt.ok) await attempt.lease.release()
      for (const user of usersByNode) expect((await other.count(keyOf(user, 'renew'))).count).toBe(0)
    })

    it('never grants more than the limit to 40 concurrent acquires from two clients', async () => {
      const one = leasesOn(a)
      const two = leasesOn(b)
      for (const user of usersByNode) {
        const key = keyOf(user, 'race')
        const results = await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 ? one : two).acquire(key, 3, 5_000)),
        )
        expect(results.filter((r) => r.ok)).toHaveLength(3)
        for (const r of results) if (r.ok) await r.lease.release()
      }
    })
  })

  describe('upstream meter', () => {
    it('two pools sharing the cluster at 3x an account’s RPM: 0 upstream 429s, no window over a limit', async () => {
      const TIME_SCALE = 2 // a simulated second in 500 real ms
      const sim = await startSimulator({
        timeScale: TIME_SCALE,
        accounts: [{ id: 'acct-a', keys: ['sk-a'] }],
        limits: { 'qwen-plus': { rpm: 600, tpm: 100_000 } },
        ttftMs: 200,
      })
      // Two instances, one meter: the same lane keys on the cluster (upstream/pool.ts).
      const pools = [a, b].map(
        (client) =>
          makePool({
            accounts: [{ id: 'acct-a', apiKey: 'sk-a' }],
            models: { 'qwen-plus': { rpm: 600, tpm: 100_000, fallback: [] } },
            // As packages/core/test/upstream/sim.test.ts: 0.9 leaves 55 ms of transport jitter at
            // this scale, for 20 users on two loaded cores.
            upstream: { rampUp: { initialRps: 2, factor: 1.5 }, safetyMargin: 0.9 },
            queue: { maxWaitMs: 1_000, maxSize: 1_000 },
            store: { redis: client, prefix: 'meter' },
            timeScale: TIME_SCALE,
          }).pool,
      )
      await Promise.all(
        Array.from({ length: 6 }, () =>
          fetch(`${sim.url}/models`, { headers: { authorization: 'Bearer sk-a' } }).then((r) => r.text()),
        ),
      )
      let served = 0
      let upstream429 = 0
      let guardRefusals = 0
      const stopAt = Date.now() + 3_500
      const user = async (index: number) => {
        const pool = pools[index % 2]!
        const name = `user-${index}`
        while (Date.now() < stopAt) {
          const started = Date.now()
          const messages = [{ role: 'user', content: `hello from ${name} at ${started}` }]
          const prompt = countPromptTokens(messages)
          try {
            const slot = await pool.acquire({
              user: name,
              model: 'qwen-plus',
              promptTokens: prompt,
              reservedTokens: prompt + 16,
              deadline: stopAt + 1_000,
            })
            const res = await fetch(`${sim.url}/chat/completions`, {
              method: 'POST',
              headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
              body: JSON.stringify({ model: slot.model, messages, max_tokens: 16 }),
            })
            const text = await res.text()
            if (res.ok) {
              await slot.settle((JSON.parse(text) as { usage: { total_tokens: number } }).usage.total_tokens)
              served += 1
            } else {
              upstream429 += 1
              await slot.fail(classifyRefusal({ status: res.status, body: text }))
            }
          } catch (error) {
            if (!isQwenGuardError(error)) throw error
            expect(error.code).toBe('upstream_saturated')
            guardRefusals += 1
          }
          await sleep(Math.max(0, 1_333 - (Date.now() - started)))
        }
      }
      await Promise.all(Array.from({ length: 20 }, (_, i) => user(i)))
      const lane = sim.stats().accounts['acct-a']?.['qwen-plus']
      await Promise.all(pools.map((pool) => pool.close()))
      await sim.close()
      console.log(
        `[redis-cluster meter] served ${served}, guard refusals ${guardRefusals}, upstream 429s ${upstream429}`,
      )
      expect(upstream429).toBe(0)
      expect(lane).toBeDefined()
      expect(lane!.maxRequestsPer1s).toBeLessThanOrEqual(lane!.limits.rps)
      expect(lane!.maxRequestsPer60s).toBeLessThanOrEqual(lane!.limits.rpm)
      expect(lane!.maxTokensPer60s).toBeLessThanOrEqual(lane!.limits.tpm)
      expect(served).toBeGreaterThan(20) // paced, not stalled
      expect(guardRefusals).toBeGreaterThan(0) // offered 3x: the meter held the rest back
    })
  })

  describe('socket corking', () => {
    it('holds every node’s writes until the end of the turn: one write per node, every command answered', async () => {
      // A key per node, and each node's connection open.
      const keys = usersByNode.map((user) => `cork:${identityTag('user', user)}`)
      await Promise.all(keys.map((key) => a.del(key)))
      const nodes = a.nodes('master')
      const streams = nodes.map((node) => (node as unknown as { stream: Socket }).stream)
      type Spy = MockInstance<(...args: unknown[]) => unknown>
      const watch = (stream: Socket, method: '_write' | '_writev') =>
        vi.spyOn(stream as unknown as Record<string, (...args: unknown[]) => unknown>, method) as Spy
      const single = streams.map((stream) => watch(stream, '_write'))
      const batched = streams.map((stream) => watch(stream, '_writev'))
      coalesceWrites(a)
      const replies = Promise.all(keys.flatMap((key) => [a.incr(key), a.incrby(key, 5), a.get(key)]))
      for (const stream of streams) expect(stream.writableCorked).toBe(1)
      expect(await replies).toEqual(keys.flatMap(() => [1, 6, '6']))
      for (const stream of streams) expect(stream.writableCorked).toBe(0)
      for (let i = 0; i < streams.length; i += 1) {
        expect(single[i]).not.toHaveBeenCalled()
        expect(batched[i]).toHaveBeenCalledTimes(1)
        expect(batched[i]!.mock.calls[0]?.[0]).toHaveLength(3)
      }
      for (const spy of [...single, ...batched]) spy.mockRestore()
    })
  })

  for (const policy of ['open', 'closed'] as const) {
    describe(`one node stalled (SIGSTOP), store.onError '${policy}'`, () => {
      let sim: Simulator
      let guard: Guard
      let client: Cluster
      const events: GuardEvent[] = []
      const prefix = `stall-${policy}`
      /** The node to stall: not the one holding the lane's meter, so healthy users can still be paced. */
      let stalled = 0
      let stalledUser = ''
      let healthyUser = ''

      beforeAll(async () => {
        sim = await startSimulator({ burst: false })
        client = cluster.client()
        const options: GuardOptions = {
          upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
          quotas: { user: { rpm: 1_000, tpm: 1_000_000, concurrency: 10 } },
          store: { redis: client, prefix, onError: policy },
        }
        guard = createGuard(options)
        for (const type of ['store_error', 'store_recovered'] as const) guard.on(type, (e) => events.push(e))
        const laneNode = cluster.nodes.indexOf(await cluster.nodeOf(`${prefix}:up:{default|qwen-plus}:h`))
        stalled = (laneNode + 1) % 3
        stalledUser = usersByNode[stalled]!
        healthyUser = usersByNode[(stalled + 1) % 3]!
      })
      afterAll(async () => {
        cluster.resume(stalled)
        await guard.close()
        await sim.close()
      })

      const timedCall = async (user: string) => {
        const started = performance.now()
        try {
          const answer = await guard.call({ user }, { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] })
          await answer.response.text()
          return { status: 200, ms: performance.now() - started }
        } catch (error) {
          const e = error as { status?: number; code?: string }
          return { status: e.status ?? 0, code: e.code, ms: performance.now() - started }
        }
      }

      it('answers every call by the policy within the bound while the node is stalled', async () => {
        expect(await timedCall(stalledUser)).toMatchObject({ status: 200 })
        expect(await timedCall(healthyUser)).toMatchObject({ status: 200 })
        cluster.pause(stalled)
        const results = []
        // About 3 s of calls (well below the cluster's 15 s node timeout: one node stalled, not the cluster down).
        for (let round = 0; round < 4; round += 1) {
          results.push(...(await Promise.all([timedCall(stalledUser), timedCall(healthyUser), timedCall(stalledUser)])))
          await sleep(300)
        }
        console.log(
          `[redis-cluster stall ${policy}] status/answer ms: ${results.map((r) => `${r.status}/${r.ms.toFixed(0)}`).join(', ')}; ` +
            `store events: ${events.map((e) => e.type).join(', ')}`,
        )
        for (const result of results) expect(result.ms).toBeLessThan(ANSWER_BOUND_MS)
        // The stalled node's users: served from memory ('open') or refused 503 ('closed'), never hung.
        const stalledResults = results.filter((_, i) => i % 3 !== 1)
        for (const result of stalledResults) {
          if (policy === 'open') expect(result).toMatchObject({ status: 200 })
          else expect(result).toMatchObject({ status: 503, code: 'store_unavailable' })
        }
        for (const result of results) expect([200, 503]).toContain(result.status)
        expect(events[0]?.type).toBe('store_error')
      })

      it('is back on the cluster after SIGCONT (store_recovered); the late charges were given back', async () => {
        cluster.resume(stalled)
        await sleep(1_100) // a probe is due
        let back = await timedCall(stalledUser)
        let afterResume = 1
        for (let i = 0; i < 8 && (back.status !== 200 || events.at(-1)?.type !== 'store_recovered'); i += 1) {
          await sleep(300)
          back = await timedCall(stalledUser)
          afterResume += 1
        }
        expect(back).toMatchObject({ status: 200 })
        expect(events.at(-1)?.type).toBe('store_recovered')
        await sleep(300)
        // Under 'closed' the stalled user was served only before the stall and after it (the late
        // consumes the node ran on SIGCONT were refunded); under 'open' the stall's calls went to memory.
        const charged = Number(await client.get(`${prefix}:user:rpm:{user:${stalledUser}}`))
        expect(charged).toBeGreaterThanOrEqual(2)
        expect(charged).toBeLessThanOrEqual(1 + afterResume)
      })
    })
  }

  for (const policy of ['open', 'closed'] as const) {
    describe(`per-node store health: one node stalled (SIGSTOP), store.onError '${policy}'`, () => {
      it('one store_error and one store_recovered for the outage, store_up 0 throughout; healthy nodes served from the cluster without delay; the stalled node answered by the policy, at once after the first call', async () => {
        const TIMEOUT_MS = 1_000 // store.commandTimeoutMs: wide, so "at once" (< half of it) is clear on a busy machine
        const AT_ONCE_MS = TIMEOUT_MS / 2
        const sim = await startSimulator({ burst: false })
        const client = cluster.client()
        const prefix = `node-${policy}`
        const registry = new Registry()
        const guard = createGuard({
          upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
          quotas: { user: { rpm: 1_000, tpm: 1_000_000, concurrency: 10 } },
          store: { redis: client, prefix, onError: policy, commandTimeoutMs: TIMEOUT_MS },
          metrics: { registry },
        })
        const events: Array<GuardEvent & { at: number }> = []
        for (const type of ['store_error', 'store_recovered'] as const) {
          guard.on(type, (e) => events.push({ ...e, at: performance.now() }))
        }
        const storeUp = async () => (await registry.getSingleMetric('qwen_guard_store_up')?.get())?.values[0]?.value
        // Stall a node that holds neither the lane's meter nor the shared queue: only its users' quotas.
        const laneNode = cluster.nodes.indexOf(await cluster.nodeOf(`${prefix}:up:{default|qwen-plus}:h`))
        const queueNode = cluster.nodes.indexOf(await cluster.nodeOf(`${prefix}:fq:{qwen-plus}:z`))
        const stalled = [0, 1, 2].find((i) => i !== laneNode && i !== queueNode)!
        const stalledUser = usersByNode[stalled]!
        const healthyUsers = usersByNode.filter((_, i) => i !== stalled)
        const timedCall = async (user: string) => {
          const started = performance.now()
          try {
            const answer = await guard.call(
              { user },
              { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] },
            )
            await answer.response.text()
            return { status: 200, ms: performance.now() - started }
          } catch (error) {
            const e = error as { status?: number; code?: string }
            return { status: e.status ?? 0, code: e.code, ms: performance.now() - started }
          }
        }
        const byPolicy = policy === 'open' ? { status: 200 } : { status: 503, code: 'store_unavailable' }
        try {
          for (const user of usersByNode) expect(await timedCall(user)).toMatchObject({ status: 200 })
          cluster.pause(stalled)
          const pausedAt = performance.now()
          // The first call of the stalled node's user waits the command timeout; a healthy user's
          // call made at the same time does not wait for it.
          const [first, ...healthyFirst] = await Promise.all([
            timedCall(stalledUser),
            ...healthyUsers.map((user) => timedCall(user)),
          ])
          expect(first).toMatchObject(byPolicy)
          expect(first!.ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50)
          expect(first!.ms).toBeLessThan(TIMEOUT_MS + ANSWER_BOUND_MS)
          for (const result of healthyFirst) {
            expect(result).toMatchObject({ status: 200 })
            expect(result.ms).toBeLessThan(AT_ONCE_MS)
          }
          expect(events.map((e) => e.type)).toEqual(['store_error'])
          expect(String((events[0] as { error?: Error }).error?.message)).toContain(
            `node 127.0.0.1:${cluster.nodes[stalled]!.port}`,
          )
          // About 3 s more (well below the cluster's 15 s node timeout), probes of the node included.
          const stalledResults: Array<{ status: number; ms: number }> = []
          const healthyResults: Array<{ status: number; ms: number }> = []
          const upDuring: unknown[] = []
          while (performance.now() - pausedAt < 3_000 + TIMEOUT_MS) {
            const [s, ...h] = await Promise.all([
              timedCall(stalledUser),
              ...healthyUsers.map((user) => timedCall(user)),
            ])
            stalledResults.push(s!)
            healthyResults.push(...h)
            upDuring.push(await storeUp())
            await sleep(100)
          }
          console.log(
            `[redis-cluster per-node ${policy}] first ${first!.status}/${first!.ms.toFixed(0)} ms; ` +
              `stalled node after: ${stalledResults.map((r) => `${r.status}/${r.ms.toFixed(0)}`).join(', ')}; ` +
              `healthy max ${Math.max(...healthyResults.map((r) => r.ms)).toFixed(0)} ms over ${healthyResults.length}`,
          )
          for (const result of stalledResults) {
            expect(result).toMatchObject(byPolicy)
            expect(result.ms).toBeLessThan(AT_ONCE_MS)
          }
          for (const result of healthyResults) {
            expect(result).toMatchObject({ status: 200 })
            expect(result.ms).toBeLessThan(AT_ONCE_MS)
          }
          expect(stalledResults.length).toBeGreaterThan(5)
          expect(events.map((e) => e.type)).toEqual(['store_error'])
          expect(new Set(upDuring)).toEqual(new Set([0]))
          // Healthy users were counted on the cluster (not in per-instance memory): every call.
          for (const user of healthyUsers) {
            expect(Number(await client.get(`${prefix}:user:rpm:{user:${user}}`))).toBe(
              2 + healthyResults.length / healthyUsers.length,
            )
          }
          // SIGCONT: the store's own probe ends the outage within a probe interval, with no call made.
          cluster.resume(stalled)
          const resumedAt = performance.now()
          while (events.length < 2 && performance.now() - resumedAt < 5_000) await sleep(50)
          expect(events.map((e) => e.type)).toEqual(['store_error', 'store_recovered'])
          expect(events[1]!.at - resumedAt).toBeLessThan(PROBE_INTERVAL_MS + ANSWER_BOUND_MS)
          const downMs = (events[1] as { downMs: number }).downMs
          expect(downMs).toBeGreaterThanOrEqual(3_000)
          expect(await storeUp()).toBe(1)
          expect(await timedCall(stalledUser)).toMatchObject({ status: 200 })
          expect(events).toHaveLength(2)
        } finally {
          cluster.resume(stalled)
          await guard.close()
          await sim.close()
        }
      })
    })
  }

  describe('per-node store health: two nodes stalled, one after the other', () => {
    it('one store_error when the first goes down, one store_recovered when the last is back; a node back serves its users at once', async () => {
      const client = cluster.client()
      const events: GuardEvent[] = []
      const store = createGuardStore({ redis: client, prefix: 'two', onError: 'closed', commandTimeoutMs: 400 }, (e) =>
        events.push(e),
      )
      const keyOn = (i: number) => `two:user:rpm:${identityTag('user', usersByNode[i]!)}`
      const incr = (i: number) => store.run(keyOn(i), () => client.incr(keyOn(i)))
      const [first, second, healthy] = [0, 1, 2]
      try {
        for (const i of [first, second, healthy]) await incr(i)
        cluster.pause(first)
        await expect(incr(first)).rejects.toThrow(/did not answer/)
        cluster.pause(second)
        await expect(incr(second)).rejects.toThrow(/did not answer/)
        expect(events.map((e) => e.type)).toEqual(['store_error'])
        expect(store.health.downFor(keyOn(first))).toBe(true)
        expect(store.health.downFor(keyOn(second))).toBe(true)
        expect(store.health.downFor(keyOn(healthy))).toBe(false)
        const started = performance.now()
        await expect(incr(first)).rejects.toThrow(/unavailable/) // at once: no wait for a down node
        expect(performance.now() - started).toBeLessThan(100)
        expect(await incr(healthy)).toBe(2)
        // The first node back: its users are served again, the store is still down (the second is not).
        cluster.resume(first)
        const resumedAt = performance.now()
        while (store.health.downFor(keyOn(first)) && performance.now() - resumedAt < 5_000) await sleep(50)
        expect(store.health.downFor(keyOn(first))).toBe(false)
        expect(await incr(first)).toBeGreaterThanOrEqual(2)
        expect(store.health.down).toBe(true)
        expect(events.map((e) => e.type)).toEqual(['store_error'])
        cluster.resume(second)
        while (store.health.down && performance.now() - resumedAt < 10_000) await sleep(50)
        expect(events.map((e) => e.type)).toEqual(['store_error', 'store_recovered'])
        expect(await incr(second)).toBeGreaterThanOrEqual(2)
      } finally {
        cluster.resume(first)
        cluster.resume(second)
        store.close()
      }
    })
  })

  // Last: the cluster has lost a node for good after it.
  describe('one node killed (SIGKILL)', () => {
    it("answers every call by each policy within the bound: 'open' serves, 'closed' refuses 503", async () => {
      const sim = await startSimulator({ burst: false })
      const guards = (['open', 'closed'] as const).map((policy) =>
        createGuard({
          upstream: { baseURL: sim.url, apiKey: 'sk-sim', rampUp: false },
          quotas: { user: { rpm: 1_000, tpm: 1_000_000, concurrency: 10 } },
          store: { redis: cluster.client(), prefix: `killed-${policy}`, onError: policy },
        }),
      )
      const laneNodes = await Promise.all(
        ['open', 'closed'].map(async (p) =>
          cluster.nodes.indexOf(await cluster.nodeOf(`killed-${p}:up:{default|qwen-plus}:h`)),
        ),
      )
      // The lanes' slots depend only on their tag: both on one node; kill another.
      expect(laneNodes[0]).toBe(laneNodes[1])
      const killed = (laneNodes[0]! + 1) % 3
      const user = usersByNode[killed]!
      const call = async (guard: Guard) => {
        const started = performance.now()
        try {
          const answer = await guard.call({ user }, { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] })
          await answer.response.text()
          return { status: 200, ms: performance.now() - started }
        } catch (error) {
          const e = error as { status?: number; code?: string }
          return { status: e.status ?? 0, code: e.code, ms: performance.now() - started }
        }
      }
      try {
        for (const guard of guards) expect(await call(guard)).toMatchObject({ status: 200 })
        const inFlight = guards.map((guard) => call(guard))
        await cluster.kill(killed)
        const results = [await Promise.all(inFlight)]
        for (let round = 0; round < 3; round += 1) {
          await sleep(300)
          results.push(await Promise.all(guards.map((guard) => call(guard))))
        }
        console.log(
          `[redis-cluster killed] open: ${results.map((r) => `${r[0]!.status}/${r[0]!.ms.toFixed(0)}`).join(', ')}; ` +
            `closed: ${results.map((r) => `${r[1]!.status}/${r[1]!.ms.toFixed(0)}`).join(', ')}`,
        )
        for (const [open, closed] of results) {
          expect(open!.ms).toBeLessThan(ANSWER_BOUND_MS)
          expect(closed!.ms).toBeLessThan(ANSWER_BOUND_MS)
          expect(open).toMatchObject({ status: 200 })
          expect(closed).toMatchObject({ status: 503, code: 'store_unavailable' })
        }
      } finally {
        await Promise.all(guards.map((guard) => guard.close()))
        await sim.close()
      }
    })
  })
})
