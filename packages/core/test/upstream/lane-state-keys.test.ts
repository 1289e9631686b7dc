// The lane's shared state: cooldowns shared by the account, disables per fingerprint of its API keys
// (pool.ts, lane-state-lua.ts); written by an attack, failed before its fix.
import { afterEach, expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { createGuard } from '../../src/guard.js'
import { startUpstreamStub } from '../upstream-stub.js'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

describeRedis("lane state and the account's API keys", () => {
  const { redis, prefix } = redisClient()

  it('two instances of one account with the same keys listed in another order share the cooldown Qwen asked for', async () => {
    const stub = await startUpstreamStub((_req, res) => {
      // Qwen's rate limit of the account (all its keys share it), asking for 5 s.
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '5' })
      res.end(JSON.stringify({ error: { code: 'limit_requests', message: 'Requests rate limit exceeded' } }))
    })
    open.push(stub)
    const make = (apiKeys: string[]) => {
      const guard = createGuard({
        upstream: {
          baseURL: stub.baseURL,
          accounts: [{ id: 'acct-shared', apiKeys }],
          rampUp: false,
          maxAttempts: 1,
          timeoutMs: 3_000,
        },
        queue: { maxWaitMs: 200 },
        store: { redis: redis as never, prefix },
      })
      open.push(guard)
      return guard
    }
    const ask = (guard: ReturnType<typeof createGuard>) =>
      guard
        .client({ user: 'u' })
        .chat.completions.create({ model: 'qwen-plus', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })
        .then(
          () => 200,
          (e: { status?: number }) => e.status,
        )
    const a = make(['sk-key-one', 'sk-key-two'])
    const b = make(['sk-key-two', 'sk-key-one']) // the same keys, from an env var in another order
    expect(await ask(a)).toBe(429)
    expect(stub.requests).toBe(1)
    // Within Qwen's 5 s: instance b must not send to the throttled account either.
    await ask(b)
    expect(stub.requests).toBe(1)
  })
})
