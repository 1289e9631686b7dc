// A waiter refused while the queue drains (every lane disabled, the store's 'closed' policy) must not
// leave its user's later waiters stranded until maxWaitMs: they are refused in the same drain.
import { expect, it } from 'vitest'
import { isQwenGuardError } from '../../src/errors.js'
import { makePool, request } from './support.js'

it('when the only account is disabled, every queued call of a user gets 503 at once, not a 429 at maxWaitMs', async () => {
  const { pool } = makePool({
    accounts: [{ id: 'acct-a', apiKey: 'k' }],
    models: { m1: { rpm: 60, tpm: 600_000, fallback: [] } }, // 1 rps: the next calls queue
    queue: { maxWaitMs: 5_000, maxSize: 100 },
  })
  const slot = await pool.acquire(request({ user: 'u', model: 'm1' }))
  const started = Date.now()
  const queued = Array.from({ length: 3 }, () =>
    pool.acquire(request({ user: 'u', model: 'm1' })).catch((e: unknown) => e),
  )
  await new Promise((r) => setTimeout(r, 20))
  await slot.fail({
    kind: 'arrears',
    status: 400,
    message: 'Arrearage',
    retryable: false,
    terminal: true,
    reach: 'account',
  })
  const errors = await Promise.all(queued)
  expect(errors.map((e) => isQwenGuardError(e) && e.code)).toEqual(Array(3).fill('upstream_unavailable'))
  expect(Date.now() - started).toBeLessThan(1_000)
  await pool.close()
})
