/**
 * Waiters for upstream capacity: one FIFO per user; between users, the one served least recently
 * goes first. For users that stay queued this is plain round-robin (each gets one turn per round);
 * unlike a ring that appends newcomers at the end of the round, it also stays fair when users come
 * and go (a caller refused at maxWaitMs who comes back is not sent to the back again, behind users
 * that were just served). So a user with a thousand waiting calls gets one turn per round like a
 * user with one, and nobody waits behind a heavy user's backlog.
 */
export interface Queued {
  user: string
}

/** How many users' last-served marks are remembered after their queue empties. */
const MEMORY = 10_000

export class FairQueue<T extends Queued> {
  private readonly byUser = new Map<string, T[]>()
  /** Serve counter value when each user was last served (Map order: oldest mark first). */
  private readonly lastServed = new Map<string, number>()
  /** Order in which users' current queues were opened: breaks ties between never-served users. */
  private readonly opened = new Map<string, number>()
  private serves = 0
  private opens = 0
  private count = 0

  get size(): number {
    return this.count
  }

  /** Adds at the tail of the user's queue; returns the 1-based position in the whole queue. */
  push(item: T): number {
    let queue = this.byUser.get(item.user)
    if (!queue) {
      this.byUser.set(item.user, (queue = []))
      this.opened.set(item.user, ++this.opens)
    }
    queue.push(item)
    return ++this.count
  }

  /** Each user's oldest waiter, in serving order (least recently served user first). */
  heads(): T[] {
    return this.order().map((user) => this.byUser.get(user)![0]!)
  }

  /** The item got capacity: remove it and mark its user as just served. */
  served(item: T): void {
    if (!this.remove(item)) return
    this.lastServed.delete(item.user) // re-insert: Map order stays oldest mark first
    this.lastServed.set(item.user, ++this.serves)
    if (this.lastServed.size > MEMORY) {
      const oldest = this.lastServed.keys().next().value
      if (oldest !== undefined) this.lastServed.delete(oldest)
    }
  }

  /** Removes an item (abort, timeout) without marking its user as served. */
  remove(item: T): boolean {
    const queue = this.byUser.get(item.user)
    const at = queue ? queue.indexOf(item) : -1
    if (!queue || at < 0) return false
    queue.splice(at, 1)
    this.count--
    if (queue.length === 0) {
      this.byUser.delete(item.user)
      this.opened.delete(item.user)
    }
    return true
  }

  /** Waiters served before `item` if every turn were taken: one per user per round, in serving order. */
  ahead(item: T): number {
    const own = this.byUser.get(item.user)
    const position = own ? own.indexOf(item) : 0
    const order = this.order()
    const rank = order.indexOf(item.user)
    let n = 0
    order.forEach((user, i) => {
      const length = this.byUser.get(user)!.length
      n += user === item.user ? position : Math.min(length, i < rank ? position + 1 : position)
    })
    return n
  }

  all(): T[] {
    return [...this.byUser.values()].flat()
  }

  private order(): string[] {
    const mark = (user: string) => this.lastServed.get(user) ?? 0
    return [...this.byUser.keys()].sort((a, b) => mark(a) - mark(b) || this.opened.get(a)! - this.opened.get(b)!)
  }
}
