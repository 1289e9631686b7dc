/**
 * GET /api/usage: the guard's usage report (`guard.usageReport()`, docs/usage-report.md) for the
 * last 30 minutes, trimmed for the page's chart: per account x model, requests and tokens per
 * minute, the peaks and the limits. Account ids are the server's own names and never reach a
 * client (types.ts, AccountConfig.id): the page sees "account 1", "account 2" in configuration order.
 */
import type { Request, Response } from 'express'
import type { Guard, UsageLimits } from '@qwen-guard/core'

/** Minutes the page's chart shows. */
export const USAGE_CHART_MINUTES = 30

export interface UsageBody {
  /** Epoch ms: the first and the end of the chart's minutes. */
  from: number
  to: number
  lanes: Array<{
    account: string
    model: string
    limits: UsageLimits
    peakRequestsPerMinute: number
    peakTokensPerMinute: number
    minutes: Array<{ at: number; requests: number; tokens: number }>
  }>
}

/** `accountIds`: the configured account ids in order (labelled 1, 2, ... on the page). */
export function usageRoute(guard: Guard, accountIds: string[]) {
  return async (_req: Request, res: Response): Promise<void> => {
    const now = Date.now()
    const report = await guard.usageReport({ from: now - (USAGE_CHART_MINUTES - 1) * 60_000, to: now })
    const body: UsageBody = {
      from: report.from,
      to: report.to,
      lanes: report.lanes.map((lane) => ({
        account: `account ${accountIds.indexOf(lane.account) + 1}`,
        model: lane.model,
        limits: lane.limits,
        peakRequestsPerMinute: lane.peaks.requestsPerMinute.value,
        peakTokensPerMinute: lane.peaks.tokensPerMinute.value,
        minutes: lane.minutes.map((m) => ({ at: m.at, requests: m.requests, tokens: m.inputTokens + m.outputTokens })),
      })),
    }
    res.set('cache-control', 'no-store').json(body)
  }
}
