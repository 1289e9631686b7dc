/**
 * coalesceWrites on a real redis-server: the commands of one tick leave in one socket write, and
 * every one of them still gets its own reply.
 */
import type { Socket } from 'node:net'
import { expect, it, vi, type MockInstance } from 'vitest'
import { describeRedis, redisClient } from '../../../test/support/redis.js'
import { coalesceWrites } from '../src/redis-writes.js'

describeRedis('coalesceWrites', () => {
  const { redis, prefix } = redisClient()
  const socket = () => (redis as unknown as { stream: Socket }).stream
  /** Watches one of the socket's internal write methods (what reaches the kernel: one call, one write). */
  const watch = (stream: Socket, method: '_write' | '_writev') =>
    vi.spyOn(stream as unknown as Record<string, (...args: unknown[]) => unknown>, method) as MockInstance<
      (...args: unknown[]) => unknown
    >

  it('sends the commands of one tick in one write, each answered', async () => {
    await redis.ping() // connected
    const stream = socket()
    const single = watch(stream, '_write')
    const batched = watch(stream, '_writev')
    coalesceWrites(redis)
    const replies = Promise.all([redis.incr(`${prefix}:a`), redis.incrby(`${prefix}:a`, 5), redis.get(`${prefix}:a`)])
    expect(stream.writableCorked).toBe(1)
    expect(await replies).toEqual([1, 6, '6'])
    expect(stream.writableCorked).toBe(0)
    expect(single).not.toHaveBeenCalled()
    expect(batched).toHaveBeenCalledTimes(1)
    expect(batched.mock.calls[0]?.[0]).toHaveLength(3)
    single.mockRestore()
    batched.mockRestore()
  })

  it('without it, ioredis writes each command on its own', async () => {
    const stream = socket()
    const single = watch(stream, '_write')
    await Promise.all([redis.incr(`${prefix}:b`), redis.incr(`${prefix}:b`)])
    expect(single.mock.calls.length).toBeGreaterThanOrEqual(1)
    single.mockRestore()
  })

  it('leaves a client that is not ready alone', () => {
    expect(() => coalesceWrites(undefined)).not.toThrow()
    const offline = { status: 'connecting', stream: { cork: vi.fn(), uncork: vi.fn(), writableCorked: 0 } }
    coalesceWrites(offline as never)
    expect(offline.stream.cork).not.toHaveBeenCalled()
  })
})
