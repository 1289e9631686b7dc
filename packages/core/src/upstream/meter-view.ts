/**
 * A process's last view of a shared pace meter (redis-meter.ts): the meter's incarnation and what its
 * minute window held (requests, tokens), dated `at` (epoch ms), when the newest of those sends was
 * recorded, not when the view was read (`seenAt`: a waiting process would otherwise re-date the same
 * sends at every loss); and of those, the rate window's (its second's) when it was read. Read from
 * every reply of the meter script; sent with every command (`args`), so that a meter Redis lost is
 * seeded back from the views of the processes that sent in its window (meter-lua.ts, "Both keys lost").
 */
import type { PaceLimits } from './pace-limits.js'

export class MeterView {
  incarnation = ''
  at = 0
  seenAt = 0
  requests = 0
  tokens = 0
  secondRequests = 0
  secondTokens = 0

  /** The four script arguments (meter-lua.ts): incarnation, the view's age (ms), requests, tokens. */
  args(): string[] {
    return [this.incarnation, String(Math.max(0, Date.now() - this.at)), String(this.requests), String(this.tokens)]
  }

  /**
   * Reads a reply of the meter script: its incarnation (an admitted take's ticket begins with it; a
   * blocked or dry take's reply has it before the newest entry's age and the fractions), that age (an
   * admitted take's lateMs: its own entry is the newest) and the minute's and the second's requests
   * and tokens, read back from their fractions (six decimals: requests rounded, tokens the most whole
   * tokens the fraction can stand for). Returns whether the reply admitted a take (a send).
   */
  observe(reply: unknown[], limits: PaceLimits): boolean {
    const at = reply.length - 5
    // An admitted take's second field is its ticket; a blocked take's is its wait ('1051.546': not an
    // incarnation), a dry take's '-1'.
    const ticket = String(reply[1])
    const admitted = Number(reply[0]) === 1 && ticket.includes('.')
    this.incarnation = admitted ? ticket.slice(0, ticket.indexOf('.')) : String(reply[at - 2])
    const newestAgeMs = Number(admitted ? reply[2] : reply[at - 1])
    this.seenAt = Date.now()
    this.at = this.seenAt - (Number.isFinite(newestAgeMs) && newestAgeMs > 0 ? newestAgeMs : 0)
    this.secondRequests = Math.round(Number(reply[at + 1]) * limits.rps)
    this.secondTokens = wholeTokens(Number(reply[at + 2]), limits.tps)
    this.requests = Math.round(Number(reply[at + 3]) * limits.rpm)
    this.tokens = wholeTokens(Number(reply[at + 4]), limits.tpm)
    return admitted
  }
}

/**
 * The most whole tokens a fraction of `limit` written with six decimals (meter-lua.ts) can stand for:
 * six decimals are within 5e-7 of the fraction.
 */
function wholeTokens(fraction: number, limit: number): number {
  return Math.floor((fraction + 5e-7) * limit + 1e-9)
}
