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
 *
 * An ioredis `Cluster` has one connection per node, each a `Redis` with its own socket: every
 * ready node's socket is corked the same way, so a burst spread over several nodes leaves in one
 * write per node. A node connection made during the turn (a first command to a node, a redirection)
 * is not corked and writes at once, as without this.
 */
import type { RedisClient } from './types.js'

interface Corkable {
  cork(): void
  uncork(): void
  writableCorked: number
}

/** Holds the client's writes (every node's, for a Cluster) until the end of this turn of the event loop. */
export function coalesceWrites(redis: RedisClient | undefined): void {
  if (!redis || redis.status !== 'ready') return
  const cluster = redis as unknown as { isCluster?: boolean; nodes?: (role: 'all') => unknown[] }
  if (cluster.isCluster === true && typeof cluster.nodes === 'function') {
    for (const node of cluster.nodes('all')) corkUntilNextTurn(node as RedisClient)
    return
  }
  corkUntilNextTurn(redis)
}

/** Corks one connection's socket until setImmediate; a socket already corked is left as it is. */
function corkUntilNextTurn(connection: RedisClient): void {
  if (connection.status !== 'ready') return
  const stream = (connection as unknown as { stream?: Partial<Corkable> }).stream
  if (!stream || typeof stream.cork !== 'function' || stream.writableCorked !== 0) return
  stream.cork()
  setImmediate(() => stream.uncork?.())
}
