// `pnpm bench upstream`: upstream utilisation at 3x offered load against the simulator.
// Env: TIME_SCALE (default 1), SIM_SECONDS (default 70: a ramp-up, then a full minute), MARGIN
// (default: the guard's own default safetyMargin).
// Prints, per scenario, the busiest sliding windows the simulator saw over its limits, the number of
// upstream refusals (must be 0), and the send -> arrival delays the simulator saw: the margin's jitter
// budget ((1/m - 1) x 1 s, divided by the time scale) must cover their spread. Loopback only, bounded
// in time (about 2 x SIM_SECONDS / TIME_SCALE).
//
// Time scale 1 by default: a time-scaled run divides the jitter budget by the scale (7.7 ms at 4 with
// m = 0.97) while the event loop's stalls stay as long as they are, so it measures the machine more
// than the pacing.
import { subscribe } from 'node:diagnostics_channel'
import type { IncomingMessage } from 'node:http'
import { performance } from 'node:perf_hooks'
import { countPromptTokens, startSimulator } from '../packages/simulator/src/index.js'
import { isQwenGuardError } from '../packages/core/src/errors.js'
import { resolveOptions } from '../packages/core/src/options.js'
import { classifyRefusal } from '../packages/core/src/upstream/classify.js'
import { UpstreamPool } from '../packages/core/src/upstream/pool.js'

const timeScale = Number(process.env.TIME_SCALE ?? 1)
const simSeconds = Number(process.env.SIM_SECONDS ?? 70)
const margin =
  process.env.MARGIN === undefined
    ? resolveOptions({ upstream: { apiKey: 'sk-x' } }).upstream.safetyMargin
    : Number(process.env.MARGIN)
const USERS = 20
/** Every call of a scenario has the same prompt size (digits count one token each). */
const PROMPT_TOKENS = countPromptTokens([{ role: 'user', content: 'bench call number 000000 from user 00' }])

// Send -> arrival delay of every chat call, in real ms: the guard's side stamps the moment its slot
// was granted (the meter's take) in a header; the simulator's side is the request's last body byte,
// where the simulator charges it. Same process, same clock.
const SENT_HEADER = 'x-bench-granted-at'
let delays: number[] = []
subscribe('http.server.request.start', (message) => {
  const request = (message as { request: IncomingMessage }).request
  const granted = Number(request.headers[SENT_HEADER])
  if (Number.isFinite(granted)) request.once('end', () => delays.push(performance.now() - granted))
})

interface Scenario {
  name: string
  rpm: number
  tpm: number
  maxTokens: number
  binding: 'requests' | 'tokens'
}

// The token scenario's calls are exactly 250 tokens (prompt + max_tokens: the simulator's completions
// are max_tokens long, so the reservation is what is used): 4 fill a 1,000-TPS second exactly. With a
// size that does not divide TPS no pacer can do better than floor(TPS / size) x size in a sliding
// second (221-token calls: 4 x 221 = 88.4 % of TPS), which would measure the bench, not the guard.

const scenarios: Scenario[] = [
  { name: 'RPM-bound (600 rpm)', rpm: 600, tpm: 10_000_000, maxTokens: 8, binding: 'requests' },
  {
    name: 'TPM-bound (60k tpm, 250 tokens/call)',
    rpm: 6_000,
    tpm: 60_000,
    maxTokens: 250 - PROMPT_TOKENS,
    binding: 'tokens',
  },
]

async function run(s: Scenario) {
  const sim = await startSimulator({
    timeScale,
    accounts: [{ id: 'acct', keys: ['sk-bench'] }],
    limits: { 'qwen-plus': { rpm: s.rpm, tpm: s.tpm } },
    ttftMs: 300,
    perTokenMs: 5,
  })
  const options = resolveOptions({
    upstream: { accounts: [{ id: 'acct', apiKey: 'sk-bench' }], safetyMargin: margin },
    models: { 'qwen-plus': { rpm: s.rpm, tpm: s.tpm, fallback: [] } },
    queue: { maxWaitMs: 2_000, maxSize: 1_000 },
  })
  const pool = new UpstreamPool({ options, emit: () => undefined, timeScale })
  await Promise.all(
    Array.from({ length: 8 }, () =>
      fetch(`${sim.url}/models`, { headers: { authorization: 'Bearer sk-bench' } }).then((r) => r.text()),
    ),
  )
  delays = []
  // Offered: 3x the binding limit, spread over the users.
  const perCallTokens = PROMPT_TOKENS + s.maxTokens
  const capacityPerSimSecond = s.binding === 'requests' ? s.rpm / 60 : s.tpm / 60 / perCallTokens
  const userIntervalMs = (USERS / (3 * capacityPerSimSecond)) * (1000 / timeScale)
  const stopAt = Date.now() + (simSeconds * 1000) / timeScale
  let upstreamRefusals = 0
  let guardRefusals = 0
  const user = async (u: number) => {
    for (let n = 0; Date.now() < stopAt; n++) {
      const started = Date.now()
      const messages = [
        {
          role: 'user',
          content: `bench call number ${String(n).padStart(6, '0')} from user ${String(u).padStart(2, '0')}`,
        },
      ]
      const prompt = countPromptTokens(messages)
      try {
        const slot = await pool.acquire({
          user: `u${u}`,
          model: 'qwen-plus',
          promptTokens: prompt,
          reservedTokens: prompt + s.maxTokens,
          deadline: stopAt,
        })
        const granted = performance.now()
        const res = await fetch(`${sim.url}/chat/completions`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${slot.apiKey}`,
            'content-type': 'application/json',
            [SENT_HEADER]: String(granted),
          },
          body: JSON.stringify({ model: slot.model, messages, max_tokens: s.maxTokens }),
        })
        const text = await res.text()
        if (res.ok) await slot.settle((JSON.parse(text) as { usage: { total_tokens: number } }).usage.total_tokens)
        else {
          upstreamRefusals++
          await slot.fail(classifyRefusal({ status: res.status, body: text }))
        }
      } catch (error) {
        if (!isQwenGuardError(error)) throw error
        guardRefusals++
      }
      await new Promise((r) => setTimeout(r, Math.max(0, userIntervalMs - (Date.now() - started))))
    }
  }
  await Promise.all(Array.from({ length: USERS }, (_, u) => user(u)))
  const stats = sim.stats()
  const lane = stats.accounts.acct?.['qwen-plus']
  await pool.close()
  await sim.close()
  if (!lane) throw new Error('the simulator saw no call')
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`
  delays.sort((a, b) => a - b)
  const at = (q: number) => delays[Math.min(delays.length - 1, Math.floor(q * delays.length))] ?? NaN
  return {
    scenario: s.name,
    'util 60s (binding)': pct(
      s.binding === 'requests' ? lane.maxRequestsPer60s / lane.limits.rpm : lane.maxTokensPer60s / lane.limits.tpm,
    ),
    'util 1s (binding)': pct(
      s.binding === 'requests' ? lane.maxRequestsPer1s / lane.limits.rps : lane.maxTokensPer1s / lane.limits.tps,
    ),
    accepted: lane.accepted,
    // The simulator's own count (every refusal it answered); the bench's count of non-2xx answers is
    // the same calls seen from the other side, so the two are not added up.
    'upstream 429s': Math.max(
      upstreamRefusals,
      Object.values(stats.refused).reduce((a, b) => a + b, 0),
    ),
    refused:
      Object.entries(lane.refused)
        .map(([code, n]) => `${code}:${n}`)
        .join(' ') || '-',
    'guard 429s (queue)': guardRefusals,
    'send->arrival ms p50/p99/max': `${at(0.5).toFixed(1)} / ${at(0.99).toFixed(1)} / ${at(1).toFixed(1)}`,
  }
}

const budgetMs = ((1 / margin - 1) * 1000) / timeScale
console.log(
  `upstream pacing at 3x offered load, ${USERS} users, timeScale ${timeScale}, ${simSeconds} simulated s, safetyMargin ${margin} ` +
    `(jitter budget ${budgetMs.toFixed(1)} real ms per second window)`,
)
const rows = []
for (const s of scenarios) rows.push(await run(s))
console.table(rows)
