// Usage above the reservation whose Redis counter vanished before the settlement (evicted under
// maxmemory: counters have TTLs, so volatile-* policies pick them first; a Redis restarted without
// persistence; a failover that lost the write) is charged at once to the window current then. The
// first version of quota/counters.ts lateCharge waited for the old window's end first (up to the next
// UTC midnight for a daily window), counting the extra nowhere meanwhile and holding settle() open;
// found by an attack on that version.
import { afterEach, expect, it, vi } from 'vitest'
import { describeRedis, redisClient } from '../../../test/support/redis.js'
import { createGuard } from '../src/guard.js'
import type { GuardEvent } from '../src/types.js'
import { completion, startUpstreamStub } from './upstream-stub.js'

type Settled = Extract<GuardEvent, { type: 'settled' }>

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

describeRedis('an extra charge whose Redis counter vanished before the settlement', () => {
  const { redis, prefix } = redisClient()

  it.each([
    ['tokensPerDay', { tokensPerDay: 1_000_000 }],
    ['tpm', { tpm: 1_000_000 }],
  ] as const)(
    '%s: charged at once to the window current now (settle does not wait for the old window)',
    async (dimension, policy) => {
      const stub = await startUpstreamStub()
      open.push(stub)
      const keyPrefix = `${prefix}-${dimension}`
      const guard = createGuard({
        upstream: { baseURL: stub.baseURL, apiKey: 'sk-test-0123456789', rampUp: false, maxAttempts: 1 },
        quotas: { user: policy },
        store: { redis, prefix: keyPrefix },
      })
      open.push(guard)
      const settled: Settled[] = []
      guard.on('settled', (e) => settled.push(e))

      let release!: () => void
      const held = new Promise<void>((resolve) => (release = resolve))
      let arrived!: () => void
      const reached = new Promise<void>((resolve) => (arrived = resolve))
      // Qwen counts a prompt far longer than the estimate (1,000 tokens): usage above the reservation.
      stub.handle = async (_req, res) => {
        arrived()
        await held
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(completion({ prompt_tokens: 1_000, completion_tokens: 1, total_tokens: 1_001 }))
      }
      const call = guard
        .client({ user: 'u1' })
        .chat.completions.create({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }], max_tokens: 50 })
      await reached
      // The charged counter disappears (eviction, restart without persistence) while the call is in flight.
      const keys = await redis.keys(`${keyPrefix}:user:${dimension}:*`)
      expect(keys.length).toBe(1)
      await redis.del(...keys)
      release()
      await call
      await vi.waitFor(() => expect(settled).toHaveLength(1), { timeout: 3_000, interval: 20 })
      expect(settled[0]).toMatchObject({ basis: 'usage', usedTokens: 1_001 })
      const state = await guard.state({ user: 'u1' })
      const used = state.find((s) => s.scope === 'user' && s.dimension === dimension)
      expect(used).toBeDefined()
      // The reserved part went with the deleted counter; the extra (usage - reservation) must be counted now.
      expect(used!.limit - used!.remaining).toBeGreaterThanOrEqual(1_001 - settled[0]!.reservedTokens)
    },
  )
})
