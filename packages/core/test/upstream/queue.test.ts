import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { isQwenGuardError } from '../../src/errors.js'
import { FairQueue } from '../../src/upstream/fair-queue.js'
import type { UpstreamSlot } from '../../src/upstream/types.js'
import { makePool, request } from './support.js'

describe('FairQueue', () => {
  it('serves users round-robin, FIFO within a user', () => {
    const q = new FairQueue<{ user: string; n: number }>()
    for (let n = 0; n < 5; n++) q.push({ user: 'heavy', n })
    q.push({ user: 'l1', n: 0 })
    q.push({ user: 'l2', n: 0 })
    const order: string[] = []
    while (q.size > 0) {
      const head = q.heads()[0]!
      order.push(`${head.user}${head.n}`)
      q.served(head)
    }
    expect(order).toEqual(['heavy0', 'l10', 'l20', 'heavy1', 'heavy2', 'heavy3', 'heavy4'])
  })
})

// One account, model 'big' at 60 rpm = 1 rps, no fallback, no ramp: one grant per ~1.03 s.
const oneLane = (queue = {}) =>
  makePool({
    accounts: [{ id: 'acct-a', apiKey: 'k' }],
    models: { big: { rpm: 60, tpm: 600_000, fallback: [] } },
    queue: { maxWaitMs: 60_000, maxSize: 100, ...queue },
  })

describe('UpstreamPool queue', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    vi.setSystemTime(1_750_000_000_000)
  })
  afterEach(() => vi.useRealTimers())

  it('one heavy user cannot starve light users; each user is served FIFO', async () => {
    const { pool, events } = oneLane()
    const order: string[] = []
    const track = (user: string, n: number) => pool.acquire(request({ user })).then(() => order.push(`${user}#${n}`))
    const all = []
    for (let n = 0; n < 10; n++) all.push(track('heavy', n))
    await vi.advanceTimersByTimeAsync(10)
    for (const user of ['l1', 'l2', 'l3']) for (let n = 0; n < 2; n++) all.push(track(user, n))
    await vi.advanceTimersByTimeAsync(20_000)
    await Promise.all(all)
    // heavy#0 went at once; then the turn rotates: the light users' first calls come within the next rounds.
    const firstLight = ['l1#0', 'l2#0', 'l3#0'].map((k) => order.indexOf(k))
    expect(Math.max(...firstLight)).toBeLessThanOrEqual(5)
    const lastLight = Math.max(...['l1#1', 'l2#1', 'l3#1'].map((k) => order.indexOf(k)))
    expect(lastLight).toBeLessThan(10)
    const heavy = order.filter((k) => k.startsWith('heavy')).map((k) => Number(k.split('#')[1]))
    expect(heavy).toEqual([...heavy].sort((a, b) => a - b))
    expect(events.filter((e) => e.type === 'queued').length).toBeGreaterThanOrEqual(15)
  })

  it('waiters are woken at the meter’s exact next time, not by polling', async () => {
    const { pool } = oneLane()
    const started = Date.now()
    await pool.acquire(request())
    let at = 0
    const waiting = pool.acquire(request({ user: 'u2' })).then(() => (at = Date.now()))
    await vi.advanceTimersByTimeAsync(5_000)
    await waiting
    expect(at - started).toBeGreaterThanOrEqual(Math.floor(1_000 / 0.97))
    expect(at - started).toBeLessThanOrEqual(Math.ceil(1_000 / 0.97) + 2)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('an aborted waiter is dropped at once with the abort reason', async () => {
    const { pool } = oneLane()
    await pool.acquire(request())
    const controller = new AbortController()
    const waiting = pool.acquire(request({ user: 'u2', signal: controller.signal })).catch((e: unknown) => e)
    const behind = pool.acquire(request({ user: 'u3' }))
    await vi.advanceTimersByTimeAsync(10)
    controller.abort(new Error('client went away'))
    expect(((await waiting) as Error).message).toBe('client went away')
    await vi.advanceTimersByTimeAsync(1_100)
    await expect(behind).resolves.toMatchObject({ model: 'big' })
  })

  it('an abandoned waiter is dropped at once with the given reason; one abandoned before it queues never does', async () => {
    const { pool, events } = oneLane()
    await pool.acquire(request())
    const req = request({ user: 'u2' })
    const waiting = pool.acquire(req).catch((e: unknown) => e)
    const behind = pool.acquire(request({ user: 'u3' }))
    await vi.advanceTimersByTimeAsync(10)
    pool.abandon(req, new Error('quota refused'))
    expect(((await waiting) as Error).message).toBe('quota refused')
    await vi.advanceTimersByTimeAsync(1_100)
    await expect(behind).resolves.toMatchObject({ model: 'big' })

    const queuedBefore = events.filter((e) => e.type === 'queued').length
    const early = request({ user: 'u4' })
    pool.abandon(early, new Error('quota refused'))
    await expect(pool.acquire(early)).rejects.toThrow('quota refused')
    expect(events.filter((e) => e.type === 'queued').length).toBe(queuedBefore)
  })

  it('refuses at maxWaitMs with 429 upstream_saturated and a computed wait', async () => {
    const { pool } = oneLane({ maxWaitMs: 500 })
    await pool.acquire(request())
    const results = [0, 1, 2].map((i) => pool.acquire(request({ user: `w${i}` })).catch((e: unknown) => e))
    await vi.advanceTimersByTimeAsync(600)
    const errors = (await Promise.all(results)).filter(isQwenGuardError)
    expect(errors).toHaveLength(3)
    for (const e of errors)
      expect([e.status, e.code, e.scope, e.dimension]).toEqual([429, 'upstream_saturated', 'upstream', 'queue'])
    // The first waiter's wait is what is left of the meter's second (about 1031 - 500 ms).
    expect(errors[0]!.retryAfterMs).toBeGreaterThan(400)
    expect(errors[0]!.retryAfterMs).toBeLessThan(700)
  })

  it('the computed wait counts the waiters that would be served first', async () => {
    const { pool } = oneLane({ maxWaitMs: 500 })
    await pool.acquire(request())
    const first = pool.acquire(request({ user: 'a' })).catch((e: unknown) => e)
    const second = pool.acquire(request({ user: 'a', deadline: Date.now() + 200 })).catch((e: unknown) => e)
    await vi.advanceTimersByTimeAsync(600)
    const [a, b] = (await Promise.all([first, second])) as Array<{ retryAfterMs: number }>
    const interval = 1_000 / 0.97
    expect(b!.retryAfterMs).toBeGreaterThan(interval - 200 + interval - 5)
    expect(b!.retryAfterMs).toBeLessThan(interval - 200 + interval + 5)
    expect(a!.retryAfterMs).toBeLessThan(interval - 500 + 5)
  })

  it('refuses at the call deadline when it comes before maxWaitMs', async () => {
    const { pool } = oneLane()
    await pool.acquire(request())
    const p = pool.acquire(request({ user: 'u2', deadline: Date.now() + 200 })).catch((e: unknown) => e)
    await vi.advanceTimersByTimeAsync(250)
    expect(await p).toMatchObject({ code: 'upstream_saturated' })
  })

  it('past maxSize refuses at once with queue_full', async () => {
    const { pool } = oneLane({ maxSize: 2 })
    await pool.acquire(request())
    const waiting = [pool.acquire(request({ user: 'a' })), pool.acquire(request({ user: 'b' }))]
    const third = await pool.acquire(request({ user: 'c' })).catch((e: unknown) => e)
    expect(third).toMatchObject({ status: 429, code: 'queue_full', dimension: 'queue' })
    expect((third as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(0)
    await vi.advanceTimersByTimeAsync(3_000)
    const slots: UpstreamSlot[] = await Promise.all(waiting)
    expect(slots).toHaveLength(2)
  })

  it('a waiter whose every account gets disabled while it waits is refused 503', async () => {
    const { pool } = oneLane()
    const slot = await pool.acquire(request())
    const waiting = pool.acquire(request({ user: 'u2' })).catch((e: unknown) => e)
    await vi.advanceTimersByTimeAsync(10)
    await slot.fail({ kind: 'arrears', status: 400, message: '', retryable: true, terminal: true, reach: 'account' })
    await vi.advanceTimersByTimeAsync(10)
    expect(await waiting).toMatchObject({ status: 503, code: 'upstream_unavailable' })
  })

  it('close() rejects the waiters', async () => {
    const { pool } = oneLane()
    await pool.acquire(request())
    const waiting = pool.acquire(request({ user: 'u2' })).catch((e: unknown) => e)
    await pool.close()
    expect(await waiting).toMatchObject({ code: 'upstream_unavailable' })
  })
})
