// `pnpm bench upstream`: upstream utilisation at 3x offered load against the simulator.
// Env: TIME_SCALE (default 4), SIM_SECONDS (default 90: a ramp-up, then a full minute), MARGIN (default 0.97).
// Prints, per scenario, the busiest sliding windows the simulator saw over its limits, and the
// number of upstream refusals (must be 0). Loopback only, bounded in time.
import { countPromptTokens, startSimulator } from '../packages/simulator/src/index.js'
import { isQwenGuardError } from '../packages/core/src/errors.js'
import { resolveOptions } from '../packages/core/src/options.js'
import { classifyRefusal } from '../packages/core/src/upstream/classify.js'
import { UpstreamPool } from '../packages/core/src/upstream/pool.js'

const timeScale = Number(process.env.TIME_SCALE ?? 4)
const simSeconds = Number(process.env.SIM_SECONDS ?? 90)
const margin = Number(process.env.MARGIN ?? 0.97)
const USERS = 20

interface Scenario {
  name: string
  rpm: number
  tpm: number
  maxTokens: number
  binding: 'requests' | 'tokens'
}

const scenarios: Scenario[] = [
  { name: 'RPM-bound (600 rpm)', rpm: 600, tpm: 10_000_000, maxTokens: 8, binding: 'requests' },
  { name: 'TPM-bound (60k tpm, ~250 tokens/call)', rpm: 6_000, tpm: 60_000, maxTokens: 200, binding: 'tokens' },
]

async function run(s: Scenario) {
  const sim = await startSimulator({ timeScale, accounts: [{ id: 'acct', keys: ['sk-bench'] }], limits: { 'qwen-plus': { rpm: s.rpm, tpm: s.tpm } }, ttftMs: 300, perTokenMs: 5 })
  const options = resolveOptions({
    upstream: { accounts: [{ id: 'acct', apiKey: 'sk-bench' }], safetyMargin: margin },
    models: { 'qwen-plus': { rpm: s.rpm, tpm: s.tpm, fallback: [] } },
    queue: { maxWaitMs: 2_000, maxSize: 1_000 },
  })
  const pool = new UpstreamPool({ options, emit: () => undefined, timeScale })
  await Promise.all(Array.from({ length: 8 }, () => fetch(`${sim.url}/models`, { headers: { authorization: 'Bearer sk-bench' } }).then((r) => r.text())))
  // Offered: 3x the binding limit, spread over the users.
  const perCallTokens = countPromptTokens([{ role: 'user', content: 'bench call number 000000 from user 00' }]) + s.maxTokens
  const capacityPerSimSecond = s.binding === 'requests' ? s.rpm / 60 : s.tpm / 60 / perCallTokens
  const userIntervalMs = (USERS / (3 * capacityPerSimSecond)) * (1000 / timeScale)
  const stopAt = Date.now() + (simSeconds * 1000) / timeScale
  let upstreamRefusals = 0
  let guardRefusals = 0
  const user = async (u: number) => {
    for (let n = 0; Date.now() < stopAt; n++) {
      const started = Date.now()
      const messages = [{ role: 'user', content: `bench call number ${String(n).padStart(6, '0')} from user ${String(u).padStart(2, '0')}` }]
      const prompt = countPromptTokens(messages)
      try {
        const slot = await pool.acquire({ user: `u${u}`, model: 'qwen-plus', promptTokens: prompt, reservedTokens: prompt + s.maxTokens, deadline: stopAt })
        const res = await fetch(`${sim.url}/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
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
  return {
    scenario: s.name,
    'util 60s (binding)': pct(s.binding === 'requests' ? lane.maxRequestsPer60s / lane.limits.rpm : lane.maxTokensPer60s / lane.limits.tpm),
    'util 1s (binding)': pct(s.binding === 'requests' ? lane.maxRequestsPer1s / lane.limits.rps : lane.maxTokensPer1s / lane.limits.tps),
    accepted: lane.accepted,
    'upstream 429s': upstreamRefusals + Object.values(stats.refused).reduce((a, b) => a + b, 0),
    'guard 429s (queue)': guardRefusals,
  }
}

console.log(`upstream pacing at 3x offered load, ${USERS} users, timeScale ${timeScale}, ${simSeconds} simulated s, safetyMargin ${margin}`)
const rows = []
for (const s of scenarios) rows.push(await run(s))
console.table(rows)
