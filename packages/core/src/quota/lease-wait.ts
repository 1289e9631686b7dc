/**
 * Waiting for a concurrency lease instead of refusing at once (`queue.waitForConcurrency`).
 *
 * A full lease set has room again when some call ends, which no one can predict; so a refused
 * caller could only poll. Instead the call waits here, bounded by `queue.maxWaitMs` and the call's
 * deadline: per lease key, waiters are served fairly between users (the least recently served
 * user first, fair-queue.ts) and first-in first-out within a user; a waiter whose client went away
 * (its signal aborts) leaves the line at once. A waiter is woken when a lease of this process is
 * released for its key, and otherwise re-tries every `pollMs` (leases released by other processes
 * sharing the Redis, or expired) or at the earliest expiry, whichever comes first.
 *
 * While anyone waits for a key in this process, a new call for that key does not take a lease
 * ahead of them: it joins the line (or is refused when it does not wait).
 */
import type { Lease, LeaseAttempt, LeaseStore } from './lease.js'
import { onAbort } from '../abort-followers.js'
import { FairQueue } from '../upstream/fair-queue.js'

/** How a call waits: until when, for whom (fairness), and the signal of its client. */
export interface LeaseWait {
  /** The user the call is made for: waiters of one key are served round-robin between users. */
  user: string
  /** Epoch ms after which the wait ends with the last refusal. */
  until: number
  signal?: AbortSignal
}

interface Waiter {
  user: string
  limit: number
  ttlMs: number
  last: LeaseAttempt & { ok: false }
  done: boolean
  resolve(attempt: LeaseAttempt): void
  reject(error: unknown): void
  cleanup(): void
}

interface Line {
  queue: FairQueue<Waiter>
  draining: boolean
  again: boolean
  timer: NodeJS.Timeout | undefined
}

/** Default interval between re-tries of a waiting lease key (leases freed elsewhere). */
export const LEASE_POLL_MS = 200

export class LeaseWaiters {
  private readonly lines = new Map<string, Line>()
  private closed = false

  constructor(
    private readonly leases: LeaseStore,
    private readonly pollMs = LEASE_POLL_MS,
  ) {
    leases.onRelease((key) => this.kick(key))
  }

  /** Calls waiting for a lease of `key` in this process. */
  waiting(key: string): number {
    return this.lines.get(key)?.queue.size ?? 0
  }

  /** Takes a lease now, unless someone in this process waits for `key` (then: refused, count = limit). */
  tryAcquire(key: string, limit: number, ttlMs: number): Promise<LeaseAttempt> {
    if (this.waiting(key) > 0) return Promise.resolve({ ok: false, count: limit, nextExpiryMs: 0 })
    return this.leases.acquire(key, limit, ttlMs)
  }

  /**
   * Waits in line for a lease of `key`. Resolves with the lease, or with the last refusal when
   * `wait.until` passes; rejects with the signal's reason when the client goes away, or with the
   * store's error.
   */
  wait(
    key: string,
    limit: number,
    ttlMs: number,
    refused: LeaseAttempt & { ok: false },
    wait: LeaseWait,
  ): Promise<LeaseAttempt> {
    if (wait.signal?.aborted) return Promise.reject(wait.signal.reason)
    if (this.closed || wait.until <= Date.now()) return Promise.resolve(refused)
    let line = this.lines.get(key)
    if (!line) {
      line = { queue: new FairQueue<Waiter>(), draining: false, again: false, timer: undefined }
      this.lines.set(key, line)
    }
    const queue = line.queue
    return new Promise<LeaseAttempt>((resolve, reject) => {
      const finish = (settle: () => void) => {
        if (waiter.done) return
        waiter.done = true
        queue.remove(waiter)
        waiter.cleanup()
        this.forgetIfIdle(key)
        settle()
      }
      const timer = setTimeout(() => finish(() => resolve(waiter.last)), wait.until - Date.now())
      const waiter: Waiter = {
        user: wait.user,
        limit,
        ttlMs,
        last: refused,
        done: false,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer)
          stopFollowing?.()
        },
      }
      const { signal } = wait
      const stopFollowing = signal ? onAbort(signal, () => finish(() => reject(signal.reason))) : undefined
      queue.push(waiter)
      this.kick(key)
    })
  }

  /** Ends every wait with its last refusal. */
  close(): void {
    this.closed = true
    for (const line of this.lines.values()) {
      clearTimeout(line.timer)
      for (const waiter of line.queue.all()) {
        waiter.done = true
        line.queue.remove(waiter)
        waiter.cleanup()
        waiter.resolve(waiter.last)
      }
    }
    this.lines.clear()
  }

  private kick(key: string): void {
    const line = this.lines.get(key)
    if (!line || line.queue.size === 0) return
    if (line.draining) {
      line.again = true
      return
    }
    void this.drain(key, line)
  }

  /** Serves the line's heads in fair order while leases are granted; then sleeps until a re-try. */
  private async drain(key: string, line: Line): Promise<void> {
    line.draining = true
    clearTimeout(line.timer)
    line.timer = undefined
    let retryInMs = this.pollMs
    try {
      do {
        line.again = false
        for (;;) {
          const waiter = line.queue.heads()[0]
          if (!waiter) break
          let attempt: LeaseAttempt
          try {
            attempt = await this.leases.acquire(key, waiter.limit, waiter.ttlMs)
          } catch (error) {
            this.end(line, waiter, () => waiter.reject(error))
            continue
          }
          if (!attempt.ok) {
            for (const w of line.queue.all()) w.last = attempt
            if (attempt.nextExpiryMs > 0) retryInMs = Math.min(this.pollMs, attempt.nextExpiryMs + 1)
            break
          }
          if (waiter.done) {
            await giveBack(attempt.lease) // went away while the store answered
            continue
          }
          line.queue.served(waiter)
          this.end(line, waiter, () => waiter.resolve(attempt))
        }
      } while (line.again && line.queue.size > 0)
    } finally {
      line.draining = false
    }
    if (line.queue.size > 0 && !this.closed) {
      line.timer = setTimeout(() => this.kick(key), retryInMs)
      line.timer.unref()
    } else {
      this.forgetIfIdle(key)
    }
  }

  private end(line: Line, waiter: Waiter, settle: () => void): void {
    if (waiter.done) return
    waiter.done = true
    line.queue.remove(waiter)
    waiter.cleanup()
    settle()
  }

  private forgetIfIdle(key: string): void {
    const line = this.lines.get(key)
    if (line && line.queue.size === 0 && !line.draining) {
      clearTimeout(line.timer)
      this.lines.delete(key)
    }
  }
}

function giveBack(lease: Lease): Promise<void> {
  return lease.release()
}
