/**
 * One socket write for the Redis commands of one turn of the event loop. A guarded call sends its
 * commands in two bursts (the upstream slot and every quota counter at admission; the refund and
 * the pace correction at settlement), and ioredis writes each command to the socket on its own: a
 * system call each, which on a loaded machine costs more than the command itself (bench/RESULTS.md).
 * Corking the client's socket until the end of
 * the loop's turn (setImmediate, right after the I/O callbacks of this turn) sends the bursts of
 * every call that ran in the turn in one write, and their replies come back together. A command
 * waits at most for the rest of the turn. ioredis' own `enableAutoPipelining` batches too, but it
 * breaks on rate-limiter-flexible's commands (see options.ts), so the guard refuses it.
 */
import type { RedisClient } from './types.js'

interface Corkable {
  cork(): void
  uncork(): void
  writableCorked: number
}

/** Holds the client's writes until the end of this turn of the event loop. */
export function coalesceWrites(redis: RedisClient | undefined): void {
  if (!redis || redis.status !== 'ready') return
  const stream = (redis as unknown as { stream?: Partial<Corkable> }).stream
  if (!stream || typeof stream.cork !== 'function' || stream.writableCorked !== 0) return
  stream.cork()
  setImmediate(() => stream.uncork?.())
}
