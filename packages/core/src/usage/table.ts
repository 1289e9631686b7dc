/**
 * The usage report as text for a terminal (the `qwen-guard report` command): one row per
 * account x model with its peaks against the limits, then refusals by code and tokens per UTC day.
 */
import type { UsagePeak, UsageReport } from './types.js'

export function formatReport(report: UsageReport): string {
  const lines: string[] = []
  const minutes = report.periodMinutes
  lines.push(
    `Usage ${iso(report.from)} to ${iso(report.to)} (${minutes} minute${minutes === 1 ? '' : 's'} so far); ` +
      `a minute is at the limit when a figure reached ${percent(report.atLimitRatio)} of its limit`,
  )
  if (report.lanes.length === 0) {
    lines.push('', 'Nothing recorded in this period.')
    return lines.join('\n')
  }
  lines.push(
    '',
    table(
      [
        'account',
        'model',
        'requests',
        'peak RPM / limit',
        'peak TPM / limit',
        'peak RPS / limit',
        'peak TPS / limit',
        'at limit',
        'queue p50 / p99 / max',
        'refusals',
        'fallbacks',
        'tokens in / out',
      ],
      report.lanes.map((lane) => [
        lane.account,
        lane.model,
        int(lane.requests),
        peak(lane.peaks.requestsPerMinute),
        peak(lane.peaks.tokensPerMinute),
        peak(lane.peaks.requestsPerSecond),
        peak(lane.peaks.tokensPerSecond),
        `${percent(lane.atLimit.share)} (${int(lane.atLimit.minutes)} min)`,
        `${ms(lane.queueWaits.p50Ms)} / ${ms(lane.queueWaits.p99Ms)} / ${ms(lane.queueWaits.maxMs)}`,
        int(lane.refusals.total),
        int(lane.fallbacks),
        `${int(lane.inputTokens)} / ${int(lane.outputTokens)}`,
      ]),
    ),
  )
  const refused = report.lanes.filter((lane) => lane.refusals.total > 0)
  if (refused.length > 0) {
    lines.push('', 'Upstream refusals by code')
    lines.push(
      table(
        ['account', 'model', 'code', 'count'],
        refused.flatMap((lane) =>
          Object.entries(lane.refusals.byCode)
            .sort(([, a], [, b]) => b - a)
            .map(([code, n]) => [lane.account, lane.model, code, int(n)]),
        ),
      ),
    )
  }
  lines.push('', 'Tokens per day (UTC)')
  lines.push(
    table(
      ['account', 'model', 'date', 'requests', 'input tokens', 'output tokens'],
      report.lanes.flatMap((lane) =>
        lane.days.map((day) => [
          lane.account,
          lane.model,
          day.date,
          int(day.requests),
          int(day.inputTokens),
          int(day.outputTokens),
        ]),
      ),
    ),
  )
  if (report.unrecorded > 0) lines.push('', `${report.unrecorded} records could not be written (the store failed).`)
  return lines.join('\n')
}

/** Columns padded to their widest cell; numbers (and figures starting with one) aligned right. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i >= 2 && /^[\d.]/.test(cell) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

function peak(p: UsagePeak): string {
  // A limit under 10 that is no whole number (0.2 requests a second) keeps its decimal.
  const limit = p.limit < 10 && !Number.isInteger(p.limit) ? p.limit.toFixed(1) : int(p.limit)
  return `${int(p.value)} / ${limit} (${percent(p.ratio)})`
}

function int(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

function percent(ratio: number): string {
  const value = ratio * 100
  return `${value >= 10 || value === 0 ? Math.round(value) : value.toFixed(1)} %`
}

function ms(n: number): string {
  return n >= 1000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`
}

function iso(epochMs: number): string {
  return new Date(epochMs).toISOString().replace(':00.000Z', 'Z')
}
