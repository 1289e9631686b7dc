import type { ResolvedAccount, ResolvedBurst } from './options.js'
import { ArrivalLog, MINUTE, SECOND } from './sliding-window.js'
import type { RefusalName } from './errors.js'
import type { MinuteStats, ModelStats, ResolvedLimits } from './types.js'

/** Most fixed minutes kept per account x model in `stats().accounts[..][..].minutes` (a week): the oldest go first. */
export const MAX_MINUTES_KEPT = 10_080

/**
 * One account x model: its sliding windows, its free-allowance use and its counters. Admission
 * happens at arrival with the call's full charge (prompt + completion, both known then).
 */
export class Lane {
  readonly log = new ArrivalLog()
  readonly burstFloor: number
  accepted = 0
  refused: Record<string, number> = {}
  promptTokens = 0
  completionTokens = 0
  maxRequests1 = 0
  maxRequests60 = 0
  maxTokens1 = 0
  maxTokens60 = 0
  /** Fixed (calendar) buckets of simulated time: minute k is [k * 60 s, (k + 1) * 60 s). */
  private minutes: MinuteStats[] = []
  /** The fixed second the last accepted arrival fell in, and what it held. */
  private second = -1
  private secondRequests = 0
  private secondTokens = 0

  constructor(
    readonly account: ResolvedAccount,
    readonly model: string,
    readonly limits: ResolvedLimits,
    private readonly burst: ResolvedBurst | false,
  ) {
    this.burstFloor = burst ? (burst.floor ?? Math.max(2, Math.ceil(limits.rps / 2))) : Infinity
  }

  /**
   * Checks in DashScope's order: account state, free allowance, requests (RPM, RPS), tokens (TPM,
   * TPS), then the burst rule. Returns the refusal, or undefined when the call may pass. Charges nothing.
   */
  check(now: number, tokens: number): RefusalName | undefined {
    const { account, limits, log } = this
    if (account.state === 'arrears') return 'arrears'
    if (account.state === 'free_tier_only') return 'free_tier_only'
    if (this.promptTokens + this.completionTokens >= account.freeTokens) return 'free_quota'
    log.advance(now)
    if (log.count60 + 1 > limits.rpm || log.count1 + 1 > limits.rps) return 'limit_requests'
    if (log.tokensIn60 + tokens > limits.tpm || log.tokensIn1 + tokens > limits.tps) return 'insufficient_quota'
    if (this.burst && log.count1 + 1 > Math.max(this.burstFloor, this.burst.factor * (log.count2 - log.count1))) {
      return 'limit_burst_rate'
    }
    return undefined
  }

  /** Charges an accepted call at `now` (right after `check(now)`), and updates the window maxima.
   * The busiest window always ends at an arrival, so maxima taken at each arrival are exact. */
  accept(now: number, prompt: number, completion: number): void {
    const { log } = this
    log.push(now, prompt + completion)
    this.accepted++
    this.promptTokens += prompt
    this.completionTokens += completion
    if (log.count1 > this.maxRequests1) this.maxRequests1 = log.count1
    if (log.count60 > this.maxRequests60) this.maxRequests60 = log.count60
    if (log.tokensIn1 > this.maxTokens1) this.maxTokens1 = log.tokensIn1
    if (log.tokensIn60 > this.maxTokens60) this.maxTokens60 = log.tokensIn60
    this.countFixed(now, prompt + completion)
  }

  /** Adds an accepted arrival to its fixed minute and fixed second (time only moves forward). */
  private countFixed(now: number, tokens: number): void {
    const second = Math.floor(now / SECOND)
    if (second !== this.second) {
      this.second = second
      this.secondRequests = 0
      this.secondTokens = 0
    }
    this.secondRequests++
    this.secondTokens += tokens
    const start = Math.floor(now / MINUTE) * MINUTE
    let minute = this.minutes[this.minutes.length - 1]
    if (!minute || minute.start !== start) {
      minute = { start, requests: 0, tokens: 0, maxRequestsPerSecond: 0, maxTokensPerSecond: 0 }
      this.minutes.push(minute)
      if (this.minutes.length > MAX_MINUTES_KEPT) this.minutes.shift()
    }
    minute.requests++
    minute.tokens += tokens
    if (this.secondRequests > minute.maxRequestsPerSecond) minute.maxRequestsPerSecond = this.secondRequests
    if (this.secondTokens > minute.maxTokensPerSecond) minute.maxTokensPerSecond = this.secondTokens
  }

  refuse(code: string): void {
    this.refused[code] = (this.refused[code] ?? 0) + 1
  }

  snapshot(): ModelStats {
    return {
      account: this.account.id,
      model: this.model,
      accepted: this.accepted,
      refused: { ...this.refused },
      promptTokens: this.promptTokens,
      completionTokens: this.completionTokens,
      totalTokens: this.promptTokens + this.completionTokens,
      maxRequestsPer1s: this.maxRequests1,
      maxRequestsPer60s: this.maxRequests60,
      maxTokensPer1s: this.maxTokens1,
      maxTokensPer60s: this.maxTokens60,
      maxRequestsPerMinute: max(this.minutes, 'requests'),
      maxTokensPerMinute: max(this.minutes, 'tokens'),
      maxRequestsPerSecond: max(this.minutes, 'maxRequestsPerSecond'),
      maxTokensPerSecond: max(this.minutes, 'maxTokensPerSecond'),
      minutes: this.minutes.map((minute) => ({ ...minute })),
      limits: { ...this.limits },
    }
  }
}

/** Lanes by account and model, created on first use. */
export class LaneTable {
  private lanes = new Map<string, Map<string, Lane>>()

  constructor(private readonly burst: ResolvedBurst | false) {}

  /** The lane, or undefined when this account has no such model. */
  get(account: ResolvedAccount, model: string): Lane | undefined {
    let byModel = this.lanes.get(account.id)
    if (!byModel) this.lanes.set(account.id, (byModel = new Map()))
    let lane = byModel.get(model)
    if (!lane) {
      const limits = account.limits.get(model)
      if (!limits) return undefined
      byModel.set(model, (lane = new Lane(account, model, limits, this.burst)))
    }
    return lane
  }

  all(): Lane[] {
    return [...this.lanes.values()].flatMap((m) => [...m.values()])
  }

  clear(): void {
    this.lanes.clear()
  }
}

function max(minutes: MinuteStats[], field: Exclude<keyof MinuteStats, 'start'>): number {
  let best = 0
  for (const minute of minutes) if (minute[field] > best) best = minute[field]
  return best
}
