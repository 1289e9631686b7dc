/**
 * The fair order of upstream waiters shared by every instance on one Redis (shared-queue-lua.ts:
 * start-time fair queuing in a sorted set, one per requested model). Each waiter of this instance
 * has an entry; the pool lets a waiter take the meter only when its start tag is in the head's round
 * (`eligible`), so a user who spreads calls over instances gets one turn per round like a user who
 * does not. A heartbeat renews this instance's lease while it has entries: when it dies, its entries
 * stop blocking the others one lease later. Commands go through the guard's store; when one fails
 * `check` answers undefined and the pool orders its own waiters alone (its memory fair queue).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { GuardStore } from '../store.js'
import { SHARED_QUEUE_LUA } from './shared-queue-lua.js'

/** How often an instance with waiters renews its lease (real ms). */
export const SHARED_QUEUE_HEARTBEAT_MS = 1_000
/** How long an instance's entries count after its last renewal (real ms). */
export const SHARED_QUEUE_LEASE_MS = 3_000

/** One waiter's place in the shared order. */
export interface SharedEntry {
  readonly model: string
  readonly user: string
  readonly member: string
  /** How long the entry may wait (ms): after that (plus a lease) others drop it. */
  readonly ttlMs: number
  /** Start tag, once known. */
  tag?: number
  /** A check was sent: Redis may hold the entry, so its end must be sent too. */
  sent?: boolean
}

export interface SharedCheck {
  /** The entry's start tag (undefined: it was dropped as stale and is over). */
  tag: number | undefined
  /** The head's start tag. */
  head: number
  /** Entries waiting in the shared queue, every instance together. */
  size: number
}

/** Most ends kept for sending again after an outage. */
const MAX_UNSENT = 10_000

const SHA = createHash('sha1').update(SHARED_QUEUE_LUA).digest('hex')

export class SharedQueue {
  private readonly redis: Redis
  private readonly instance = randomBytes(8).toString('hex')
  private seq = 0
  /** Entries of this instance, per model: the heartbeat runs while there are any. */
  private readonly live = new Map<string, Set<SharedEntry>>()
  private heartbeat: NodeJS.Timeout | undefined
  /** Ends that Redis did not get (an outage): sent again when the store recovers. */
  private readonly unsent: Array<{ entry: SharedEntry; served: boolean }> = []
  private stopRetry: (() => void) | undefined

  constructor(
    private readonly store: GuardStore,
    private readonly leaseMs = SHARED_QUEUE_LEASE_MS,
    private readonly heartbeatMs = Math.min(SHARED_QUEUE_HEARTBEAT_MS, leaseMs / 3),
  ) {
    this.redis = store.redis as Redis
  }

  /** A new entry for a waiter (nothing sent yet: the first `check` adds it). */
  entry(model: string, user: string, ttlMs: number): SharedEntry {
    const entry: SharedEntry = { model, user, member: `${this.instance}|${++this.seq}`, ttlMs: Math.ceil(ttlMs) }
    let set = this.live.get(model)
    if (!set) this.live.set(model, (set = new Set()))
    set.add(entry)
    this.startHeartbeat()
    return entry
  }

  /** Adds the entry if absent and reads the head; undefined when Redis failed. */
  async check(entry: SharedEntry): Promise<SharedCheck | undefined> {
    const args = [
      'check',
      entry.member,
      entry.user,
      String(entry.ttlMs + this.leaseMs),
      this.instance,
      String(this.leaseMs),
    ]
    entry.sent = true
    try {
      const reply = (await this.store.run(this.keyOf(entry.model), () => this.send(entry.model, args))) as unknown[]
      const tag = Number(reply[0])
      const head = Number(reply[1])
      const size = Number(reply[2])
      if (!Number.isFinite(tag) || !Number.isFinite(head) || !Number.isFinite(size)) return undefined
      entry.tag = tag >= 0 ? tag : undefined
      return { tag: entry.tag, head: head >= 0 ? head : (entry.tag ?? 0), size }
    } catch {
      return undefined
    }
  }

  /** The waiter was served (`served`) or left (timeout, abort, close): its entry goes. Never rejects. */
  done(entry: SharedEntry, served: boolean): void {
    const set = this.live.get(entry.model)
    if (!set?.delete(entry)) return
    if (set.size === 0) this.live.delete(entry.model)
    if (this.live.size === 0) this.stopHeartbeat()
    if (entry.sent) this.sendDone(entry, served)
  }

  /**
   * Sent after the entry's checks on the same connection, so never overtaken by one. One that fails
   * is sent again when the store recovers: until then the entry may hold the order up (at most its
   * own wait plus a lease, when it reaches the head).
   */
  private sendDone(entry: SharedEntry, served: boolean): void {
    void this.store
      .run(
        this.keyOf(entry.model),
        () => this.send(entry.model, ['done', entry.member, entry.user, served ? '1' : '0']),
        undefined,
        true,
      )
      .catch(() => {
        if (this.unsent.length >= MAX_UNSENT) return // beyond that, left to expire (own wait + lease)
        this.unsent.push({ entry, served })
        this.stopRetry ??= this.store.onRecovered(() => {
          this.stopRetry?.()
          this.stopRetry = undefined
          for (const lost of this.unsent.splice(0)) this.sendDone(lost.entry, lost.served)
        })
      })
  }

  /** Ends the heartbeat and this instance's lease (its entries stop counting at once). */
  close(): void {
    const models = [...this.live.keys()]
    for (const set of [...this.live.values()]) for (const entry of [...set]) this.done(entry, false)
    this.stopHeartbeat()
    this.stopRetry?.()
    this.stopRetry = undefined
    for (const model of models) {
      void this.store
        .run(this.keyOf(model), () => this.send(model, ['leave', this.instance]), undefined, true)
        .catch(() => undefined)
    }
  }

  private startHeartbeat(): void {
    if (this.heartbeat) return
    this.heartbeat = setInterval(() => {
      for (const model of this.live.keys()) {
        void this.store
          .run(this.keyOf(model), () => this.send(model, ['beat', this.instance, String(this.leaseMs)]))
          .catch(() => undefined)
      }
    }, this.heartbeatMs)
    this.heartbeat.unref()
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat)
    this.heartbeat = undefined
  }

  /** The key that names the node of one model's queue (store.run): its first key. */
  private keyOf(model: string): string {
    return `${this.store.prefix}:fq:{${model}}:z`
  }

  /** The four keys of one model's queue, under one hash tag (one cluster slot). */
  private keys(model: string): string[] {
    const tag = `${this.store.prefix}:fq:{${model}}`
    return [`${tag}:z`, `${tag}:f`, `${tag}:e`, `${tag}:a`]
  }

  private async send(model: string, args: string[]): Promise<unknown> {
    const keys = this.keys(model)
    try {
      return await this.redis.evalsha(SHA, keys.length, ...keys, ...args)
    } catch (error) {
      if (!String((error as Error)?.message).includes('NOSCRIPT')) throw error
      return this.redis.eval(SHARED_QUEUE_LUA, keys.length, ...keys, ...args)
    }
  }
}
