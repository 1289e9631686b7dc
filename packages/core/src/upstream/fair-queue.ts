/**
 * Waiters for upstream capacity: one FIFO per user, served round-robin across users, so a user with
 * a thousand waiting calls gets one turn per round like a user with one. `heads()` lists each
 * user's oldest waiter starting at the user whose turn it is; `served()` moves the turn past them.
 */
export interface Queued {
  user: string
}

export class FairQueue<T extends Queued> {
  private readonly byUser = new Map<string, T[]>()
  private ring: string[] = []
  private turn = 0
  private count = 0

  get size(): number {
    return this.count
  }

  /** Adds at the tail of the user's queue; returns the 1-based position in the whole queue. */
  push(item: T): number {
    let queue = this.byUser.get(item.user)
    if (!queue) {
      this.byUser.set(item.user, (queue = []))
      // A new user joins just before the one whose turn it is: it is served last in this round.
      this.ring.splice(this.turn, 0, item.user)
      this.turn = (this.turn + 1) % this.ring.length
    }
    queue.push(item)
    return ++this.count
  }

  /** Each user's oldest waiter, the user whose turn it is first. */
  heads(): T[] {
    const out: T[] = []
    for (let i = 0; i < this.ring.length; i++) {
      const user = this.ring[(this.turn + i) % this.ring.length]!
      const head = this.byUser.get(user)?.[0]
      if (head) out.push(head)
    }
    return out
  }

  /** The item got capacity: remove it and pass the turn to the next user. */
  served(item: T): void {
    const index = this.ring.indexOf(item.user)
    if (!this.remove(item)) return
    if (index < 0) return
    const stillQueued = this.byUser.has(item.user)
    // If the user left the ring, the next user already sits at `index`.
    this.turn = this.ring.length === 0 ? 0 : (stillQueued ? index + 1 : index) % this.ring.length
  }

  /** Removes an item (abort, timeout) without passing the turn. */
  remove(item: T): boolean {
    const queue = this.byUser.get(item.user)
    const at = queue ? queue.indexOf(item) : -1
    if (!queue || at < 0) return false
    queue.splice(at, 1)
    this.count--
    if (queue.length === 0) this.dropUser(item.user)
    return true
  }

  /**
   * Waiters that round-robin would serve before `item` if every turn were taken: in each round
   * every user with waiters left gets one, starting at the user whose turn it is.
   */
  ahead(item: T): number {
    const own = this.byUser.get(item.user)
    const position = own ? own.indexOf(item) : 0
    const ownRank = this.rank(item.user)
    let n = 0
    for (const [user, queue] of this.byUser) {
      if (queue === own) n += position
      else n += Math.min(queue.length, this.rank(user) < ownRank ? position + 1 : position)
    }
    return n
  }

  private rank(user: string): number {
    const index = this.ring.indexOf(user)
    return (index - this.turn + this.ring.length) % Math.max(1, this.ring.length)
  }

  all(): T[] {
    return [...this.byUser.values()].flat()
  }

  private dropUser(user: string): void {
    this.byUser.delete(user)
    const index = this.ring.indexOf(user)
    if (index < 0) return
    this.ring.splice(index, 1)
    if (index < this.turn) this.turn--
    if (this.turn >= this.ring.length) this.turn = 0
  }
}
