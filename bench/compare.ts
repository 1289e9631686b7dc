// `pnpm bench compare [--quick] [--seed N] [--only abcde] [--no-chart]`: what users do today against
// qwen-guard, side by side, on the simulator. One seeded schedule (30 users offering 3x the account's
// RPM, mixed prompt and answer lengths, English and Chinese) is replayed from the same moment by every
// strategy: (a) the openai SDK as is, (b) the seed article's backoff, (c) the seed's fixed-interval
// queue, (d) bottleneck, (e) qwen-guard. Each strategy runs in its own process with its own simulator
// (same limits), all at once on this machine, so they share its noise but not an event loop (one
// strategy's retry storm does not delay another's sends). Prints one table, writes
// bench/results/compare-<full|quick>.svg. Then scenario 4 (guard only): retrying after exactly the
// refusal's retryAfterMs, and 20 ms early.
//
// Clock: REAL TIME for everything. The simulator runs at timeScale 1 and no strategy's clock is
// scaled: the openai SDK's retry timer cannot be scaled from outside, so compressing time would make
// (a), (b) and (d) wait too long relative to the simulator's windows. Full run: the dated snapshot's
// limits (60 RPM / 100,000 TPM), 180 s of load + 30 s drain (about 3.7 min, + 30 s of scenario 4). --quick: the same shape
// at 600 RPM / 1,000,000 TPM (qwen-plus's limits; every strategy configured for that rate) for 75 s
// + 15 s drain (about 1.6 min, + 15 s of scenario 4): shorter, and its busiest 60 s includes the guard's ramp-up.
import { fork } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { countPromptTokens } from '@qwen-guard/simulator'
import { renderChart } from './_compare-chart.js'
import { runExactness } from './_compare-exactness.js'
import { SIM_LATENCY, scheduleOf, type FromWorker, type Setup, type ToWorker } from './_compare-worker.js'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seed: { type: 'string', default: '12' },
    /** Letters of the strategies to run (default all), e.g. --only e for the guard alone. */
    only: { type: 'string', default: 'abcde' },
    'no-chart': { type: 'boolean', default: false },
  },
  allowPositionals: true, // run.ts passes the bench's name
})

const mode = args.quick ? 'quick' : 'full'
const base = { users: 30, overload: 3, seed: Number(args.seed) }
const setup: Setup = args.quick
  ? { ...base, model: 'qwen-plus', rpm: 600, tpm: 1_000_000, loadMs: 75_000, drainMs: 15_000 }
  : { ...base, model: 'qwen3-max-2025-09-23', rpm: 60, tpm: 100_000, loadMs: 180_000, drainMs: 30_000 }

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
const pct = (x: number) => `${(100 * x).toFixed(1)} %`

/** Jain's fairness index: 1 = equal shares, 1/n = one user got everything. */
function jain(values: number[]): number {
  const sum = values.reduce((a, b) => a + b, 0)
  const squares = values.reduce((a, b) => a + b * b, 0)
  return squares === 0 ? 1 : (sum * sum) / (values.length * squares)
}

const schedule = scheduleOf(setup)
const meanTokens =
  schedule.reduce((n, a) => n + countPromptTokens([{ role: 'user', content: a.content }]) + a.maxTokens, 0) /
  schedule.length
const zh = schedule.filter((a) => a.language === 'zh').length
const runMs = setup.loadMs + setup.drainMs
console.log(
  `compare (${mode}): one account, ${setup.model} at ${setup.rpm} RPM / ${setup.tpm.toLocaleString('en')} TPM; ${setup.users} users offering ` +
    `${setup.overload}x the RPM (${schedule.length} calls over ${setup.loadMs / 1000} s, Poisson, seed ${setup.seed}; ${zh} Chinese, ` +
    `${schedule.length - zh} English prompts; prompt + max_tokens ${meanTokens.toFixed(0)} tokens on average), then ${setup.drainMs / 1000} s ` +
    'of drain; calls unfinished by then are aborted and count as failed.',
)
console.log(
  'clock: REAL TIME for every strategy and simulator (timeScale 1; no SDK retry timer, bottleneck minTime, seed sleep or guard ' +
    `pacing is scaled). One process per strategy, each with its own simulator (${SIM_LATENCY.ttftMs} ms to first token + ` +
    `${SIM_LATENCY.perTokenMs} ms per token), all started at the same moment.`,
)

// Fork the workers, wait until every one has its simulator listening, then give them one start moment.
const folder = fileURLToPath(new URL('.', import.meta.url))
const letters = [...'abcde'].filter((l) => args.only.includes(l))
const workers = letters.map((letter) => {
  const child = fork(`${folder}_compare-worker.ts`, [], { execArgv: ['--import', 'tsx', '--conditions=source'] })
  child.send({ type: 'setup', letter, setup } satisfies ToWorker)
  const ready = new Promise<void>((resolve) => child.once('message', () => resolve()))
  const done = new Promise<Extract<FromWorker, { type: 'done' }>>((resolve, reject) => {
    child.on('message', (m: FromWorker) => m.type === 'done' && resolve(m))
    child.once('exit', (code) => reject(new Error(`worker ${letter} exited with ${code} before reporting`)))
  })
  done.catch(() => undefined)
  return { child, ready, done }
})
await Promise.all(workers.map((w) => w.ready))
const startAt = Date.now() + 500
for (const w of workers) w.child.send({ type: 'start', startAt } satisfies ToWorker)
await new Promise((r) => setTimeout(r, startAt + setup.loadMs - Date.now()))
const load = loadavg()
const results = await Promise.all(workers.map((w) => w.done))

const theoretical = Math.min(schedule.length, Math.floor((setup.rpm * runMs) / 60_000))
const users = [...new Set(schedule.map((a) => a.user))]
const rows: Record<string, string | number>[] = []
const headline: string[] = []
let guardPass = true
for (const r of results) {
  const lane = r.stats.accounts.acct?.[setup.model]
  const refusals = Object.values(r.stats.refused).reduce((a, b) => a + b, 0)
  const done = r.latency.filter((x): x is number => x !== null).sort((a, b) => a - b)
  const perUser = users.map((u) => schedule.filter((a) => a.user === u && r.latency[a.id] !== null).length)
  const busiest = (lane?.maxRequestsPer60s ?? 0) / setup.rpm
  const share = done.length / theoretical
  const fairness = jain(perUser)
  const isGuard = r.name.startsWith('qwen-guard')
  const goal = (ok: boolean, text: string) => {
    if (!isGuard) return ''
    guardPass &&= ok
    return ` (goal ${text}: ${ok ? 'PASS' : 'FAIL'})`
  }
  const latency = `${(quantile(done, 0.5) / 1000).toFixed(1)} / ${(quantile(done, 0.99) / 1000).toFixed(1)} s`
  rows.push({
    strategy: r.name,
    completed: done.length,
    failed: schedule.length - done.length,
    'upstream 429s': `${refusals}${goal(refusals === 0, '0')}`,
    'busiest 60 s / RPM': `${pct(busiest)}${goal(busiest >= 0.95, '>= 95 %')}`,
    'busiest 60 s / TPM': pct((lane?.maxTokensPer60s ?? 0) / setup.tpm),
    'completed / max': `${pct(share)}${goal(share >= 0.9, '>= 90 %')}`,
    'p50 / p99 latency': latency,
    Jain: `${fairness.toFixed(3)}${goal(fairness >= 0.95, '>= 0.95')}`,
  })
  headline.push(
    `| ${r.name} | ${done.length} | ${refusals.toLocaleString('en')} | ${pct(busiest)} | ${pct(share)} | ${latency} | ${fairness.toFixed(3)} |`,
  )
}
console.log(
  `theoretical maximum: ${theoretical} calls (${setup.rpm} RPM x ${runMs / 1000} s, capped by the ${schedule.length} offered). ` +
    `Jain index over the ${users.length} users' completed counts (every user offers more than a fair share). ` +
    `Latency: scheduled arrival to answer, completed calls only. Load average (1/5/15 min) at the end of the load phase: ` +
    load.map((x) => x.toFixed(2)).join(' / '),
)
console.table(rows)
if (load[0]! > availableParallelism()) {
  console.log(
    `WARNING: load average ${load[0]!.toFixed(1)} on ${availableParallelism()} CPUs during the run: the machine was oversubscribed, ` +
      'so late timers and sends measure it as much as the strategies. Rerun on a quieter machine before quoting these figures.',
  )
}
for (const r of results) {
  const refused = Object.entries(r.stats.refused).map(([code, n]) => `${code} ${n}`)
  if (refused.length > 0) console.log(`  ${r.name}: upstream refusals by code: ${refused.join(', ')}`)
}
if (letters.includes('e')) console.log(`qwen-guard goals: ${guardPass ? 'PASS' : 'FAIL'}`)
console.log(
  '\nmarkdown:\n| strategy | completed | upstream 429s | busiest 60 s / RPM | completed / max | p50 / p99 latency | Jain |\n|---|---|---|---|---|---|---|',
)
console.log(headline.join('\n'))

// Scenario 4: exactness of the guard's retryAfterMs (guard only: the other strategies get no wait to honour).
if (letters.includes('e')) {
  const seconds = args.quick ? 15 : 30
  const rows = await runExactness(seconds * 1000)
  const [exact, early] = rows as [(typeof rows)[number], (typeof rows)[number]]
  console.log(
    `\nscenario 4, exactness (qwen-guard only, real time, ${seconds} s): 6 users over their own quota (user rps 2), half retrying ` +
      "after exactly the refusal's retryAfterMs, half 20 ms early",
  )
  console.table(
    rows
      .map((r) => ({
        ...r,
        'refused again': `${r.refusedAgain} of ${r.retries} (${pct(r.retries ? r.refusedAgain / r.retries : 0)})`,
      }))
      .map(({ refusedAgain: _, ...r }) => r),
  )
  console.log(
    `  exact waiters refused again: ${exact.refusedAgain} (goal 0: ${exact.refusedAgain === 0 ? 'PASS' : 'FAIL'}); ` +
      `early waiters refused again: ${pct(early.retries ? early.refusedAgain / early.retries : 0)} (goal > 50 %, the wait is not padded: ` +
      `${early.refusedAgain > early.retries / 2 ? 'PASS' : 'FAIL'})`,
  )
}

if (!args['no-chart']) {
  const out = new URL('./results/', import.meta.url)
  mkdirSync(out, { recursive: true })
  const file = new URL(`compare-${mode}.svg`, out)
  const svg = renderChart(
    `pnpm bench compare${args.quick ? ' --quick' : ''}: ${setup.model} at ${setup.rpm} RPM / ${setup.tpm.toLocaleString('en')} TPM, ${setup.users} users at ${setup.overload}x, seed ${setup.seed}, real time`,
    results.map((r) => ({ name: r.name, calls: r.arrived })),
    { rpm: setup.rpm, tpm: setup.tpm, rps: Math.max(1, setup.rpm / 60) },
    runMs,
  )
  writeFileSync(file, svg)
  console.log(`chart: ${fileURLToPath(file)}`)
}
