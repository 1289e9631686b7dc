/**
 * The log of accepted arrivals of one account x model: (time, tokens) pairs in a growable ring
 * buffer, oldest first. Three cursors mark where the last 1 s, 2 s and 60 s begin, with running
 * sums, so every check is O(1) amortised: time only moves forward, so cursors only move forward.
 *
 * An arrival at time t is inside the window of length W at time `now` while `now - t < W`.
 */
export const SECOND = 1_000
export const MINUTE = 60_000

export class ArrivalLog {
  private times = new Float64Array(64)
  private tokens = new Float64Array(64)
  private mask = 63
  /** Absolute index of the next slot to write; entries before `start60` are dropped. */
  private end = 0
  private start60 = 0
  private start2 = 0
  private start1 = 0
  private tokens60 = 0
  private tokens2 = 0
  private tokens1 = 0

  /** Slides the cursors to `now`. Call before reading the counts. Shortest window first, so that
   * start1 >= start2 >= start60 always holds and no slot is read after it could be reused. */
  advance(now: number): void {
    const { times, tokens, mask } = this
    while (this.start1 < this.end && now - times[this.start1 & mask]! >= SECOND) {
      this.tokens1 -= tokens[this.start1 & mask]!
      this.start1++
    }
    while (this.start2 < this.end && now - times[this.start2 & mask]! >= 2 * SECOND) {
      this.tokens2 -= tokens[this.start2 & mask]!
      this.start2++
    }
    while (this.start60 < this.end && now - times[this.start60 & mask]! >= MINUTE) {
      this.tokens60 -= tokens[this.start60 & mask]!
      this.start60++
    }
  }

  /** Requests in the last 60 s / 2 s / 1 s. */
  get count60(): number {
    return this.end - this.start60
  }
  get count2(): number {
    return this.end - this.start2
  }
  get count1(): number {
    return this.end - this.start1
  }
  get tokensIn60(): number {
    return this.tokens60
  }
  get tokensIn1(): number {
    return this.tokens1
  }

  /** Records an accepted arrival at `now` (after `advance(now)`). */
  push(now: number, tokenCount: number): void {
    if (this.end - this.start60 > this.mask) this.grow()
    const i = this.end & this.mask
    this.times[i] = now
    this.tokens[i] = tokenCount
    this.end++
    this.tokens60 += tokenCount
    this.tokens2 += tokenCount
    this.tokens1 += tokenCount
  }

  clear(): void {
    this.end = this.start60 = this.start2 = this.start1 = 0
    this.tokens60 = this.tokens2 = this.tokens1 = 0
  }

  private grow(): void {
    const size = (this.mask + 1) * 2
    const times = new Float64Array(size)
    const tokens = new Float64Array(size)
    for (let k = this.start60; k < this.end; k++) {
      times[k & (size - 1)] = this.times[k & this.mask]!
      tokens[k & (size - 1)] = this.tokens[k & this.mask]!
    }
    this.times = times
    this.tokens = tokens
    this.mask = size - 1
  }
}
