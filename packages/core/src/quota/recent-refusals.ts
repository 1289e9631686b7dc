/**
 * Identities refused recently, remembered until their wait ends, per process. Admission reads the
 * counters before charging (a dry `get`) only for these: an identity hammering past its limit then
 * charges nothing, so its attempts cannot cause false refusals of others' concurrent calls, while
 * ordinary traffic pays no extra store round trip.
 */
export class RecentRefusals {
  private readonly until = new Map<string, number>()

  /** `max`: entries kept; past it the memory starts over (a missed precheck is only a cost). */
  constructor(private readonly max = 10_000) {}

  /** Identities remembered (expired ones included until looked up). */
  get size(): number {
    return this.until.size
  }

  /** Remembers `key` as refused until `untilMs` (epoch ms). */
  mark(key: string, untilMs: number): void {
    if (this.until.size >= this.max && !this.until.has(key)) this.until.clear()
    this.until.set(key, Math.max(untilMs, this.until.get(key) ?? 0))
  }

  /** True while `key` is inside a wait it was refused with. */
  has(key: string, now: number): boolean {
    const until = this.until.get(key)
    if (until === undefined) return false
    if (until > now) return true
    this.until.delete(key)
    return false
  }
}
