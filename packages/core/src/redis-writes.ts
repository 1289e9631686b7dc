/**
 * One socket write for the Redis commands a tick sends. A guarded call sends its commands in two
 * bursts (the upstream slot and every quota counter at admission; the refund and the pace
 * correction at settlement), and ioredis writes each command to the socket on its own: a system
 * call each, which on a loaded machine costs more than the command itself. Corking the client's
 * socket until the current tick's callbacks have run turns each burst, and those of every other
 * call in the same tick, into one write. ioredis' own `enableAutoPipelining` would do this, but it
 * breaks on rate-limiter-flexible's commands (see options.ts), so the guard refuses it.
 */
import type { Redis } from 'ioredis'

interface Corkable {
  cork(): void
  uncork(): void
  writableCorked: number
}

/** Holds the client's writes until this tick's callbacks and promise jobs have run. */
export function coalesceWrites(redis: Redis | undefined): void {
  if (!redis || redis.status !== 'ready') return
  const stream = (redis as unknown as { stream?: Partial<Corkable> }).stream
  if (!stream || typeof stream.cork !== 'function' || stream.writableCorked !== 0) return
  stream.cork()
  process.nextTick(() => stream.uncork?.())
}
