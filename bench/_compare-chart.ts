// A hand-written SVG for `pnpm bench compare`: one panel per strategy, time on x, the share of the
// upstream limit on y. Grey bars: requests accepted per 1 s / RPS limit. Blue line: requests
// accepted in the sliding 60 s ending there / RPM limit. Green line: tokens in the sliding 60 s / TPM.
// Red marks under the axis: seconds with upstream refusals (429s), taller for more.

export interface Arrived {
  /** Real ms since the start of the run, when the simulator had the whole request. */
  t: number
  accepted: boolean
  tokens: number
}

export interface Panel {
  name: string
  calls: Arrived[]
}

export interface ChartLimits {
  rpm: number
  tpm: number
  rps: number
}

const W = 960
const PANEL_H = 150
const LEFT = 56
const RIGHT = 16
const TOP = 52
const GAP = 34
const Y_MAX = 1.5 // 150 % of the limit

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export function renderChart(title: string, panels: Panel[], limits: ChartLimits, durationMs: number): string {
  const seconds = Math.ceil(durationMs / 1000)
  const plotW = W - LEFT - RIGHT
  const x = (s: number) => LEFT + (s / seconds) * plotW
  const h = TOP + panels.length * (PANEL_H + GAP) + 30
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${h}" fill="#fff"/>`,
    `<text x="${LEFT}" y="18" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="${LEFT}" y="32" fill="#555">grey bars: accepted per 1 s / RPS limit · blue: accepted per sliding 60 s / RPM limit · green: tokens per sliding 60 s / TPM limit</text>`,
    `<text x="${LEFT}" y="46" fill="#555">red marks under an axis: seconds with upstream 429s (taller = more) · dashed: the limit</text>`,
  ]
  panels.forEach((panel, i) => {
    const top = TOP + 14 + i * (PANEL_H + GAP)
    const y = (share: number) => top + PANEL_H - (Math.min(share, Y_MAX) / Y_MAX) * PANEL_H
    const accepted = panel.calls.filter((c) => c.accepted).sort((a, b) => a.t - b.t)
    const refused = panel.calls.filter((c) => !c.accepted)
    out.push(
      `<text x="${LEFT}" y="${top - 4}" font-weight="bold">${esc(panel.name)} — ${refused.length} upstream 429s</text>`,
    )
    out.push(`<rect x="${LEFT}" y="${top}" width="${plotW}" height="${PANEL_H}" fill="none" stroke="#ccc"/>`)
    for (const share of [0.5, 1, 1.5]) {
      out.push(`<text x="${LEFT - 6}" y="${y(share) + 4}" text-anchor="end" fill="#555">${share * 100} %</text>`)
    }
    // Per 1 s bars.
    const perSecond = new Array<number>(seconds).fill(0)
    for (const c of accepted) perSecond[Math.min(seconds - 1, Math.floor(c.t / 1000))]! += 1
    const barW = Math.max(0.5, plotW / seconds - 0.3)
    perSecond.forEach((n, s) => {
      if (n > 0)
        out.push(
          `<rect x="${x(s).toFixed(1)}" y="${y(n / limits.rps).toFixed(1)}" width="${barW.toFixed(2)}" height="${(y(0) - y(n / limits.rps)).toFixed(1)}" fill="#bbb"/>`,
        )
    })
    // Sliding 60 s lines, sampled every 0.5 s.
    const requestsLine: string[] = []
    const tokensLine: string[] = []
    let lo = 0
    let hi = 0
    let tokens = 0
    for (let t = 0; t <= seconds * 1000; t += 500) {
      while (hi < accepted.length && accepted[hi]!.t <= t) tokens += accepted[hi++]!.tokens
      while (lo < hi && accepted[lo]!.t <= t - 60_000) tokens -= accepted[lo++]!.tokens
      requestsLine.push(`${x(t / 1000).toFixed(1)},${y((hi - lo) / limits.rpm).toFixed(1)}`)
      tokensLine.push(`${x(t / 1000).toFixed(1)},${y(tokens / limits.tpm).toFixed(1)}`)
    }
    out.push(`<polyline points="${tokensLine.join(' ')}" fill="none" stroke="#2a9d4b" stroke-width="1.2"/>`)
    out.push(`<polyline points="${requestsLine.join(' ')}" fill="none" stroke="#1f5fbf" stroke-width="1.8"/>`)
    out.push(`<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${y(1)}" y2="${y(1)}" stroke="#000" stroke-dasharray="5 4"/>`)
    // Refusals per 1 s: a red mark under the axis, as tall as the count relative to the RPS limit.
    const refusedPerSecond = new Map<number, number>()
    for (const c of refused) {
      const s = Math.min(seconds - 1, Math.floor(c.t / 1000))
      refusedPerSecond.set(s, (refusedPerSecond.get(s) ?? 0) + 1)
    }
    for (const [s, n] of refusedPerSecond) {
      const len = 3 + Math.min(1, n / limits.rps) * 12
      out.push(
        `<rect x="${x(s).toFixed(1)}" y="${top + PANEL_H + 2}" width="${barW.toFixed(2)}" height="${len.toFixed(1)}" fill="#d62728"/>`,
      )
    }
  })
  const axisY = TOP + 14 + panels.length * (PANEL_H + GAP) - GAP + 24
  for (let s = 0; s <= seconds; s += seconds > 120 ? 30 : 15) {
    out.push(`<text x="${x(s).toFixed(1)}" y="${axisY}" text-anchor="middle" fill="#555">${s} s</text>`)
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}
