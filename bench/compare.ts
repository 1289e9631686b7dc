// `pnpm bench compare [--quick] [--seed N] [--only abcdeg] [--scenarios 1234] [--time-scale N] [--no-chart]`:
// what users do today against qwen-guard, side by side, on the simulator.
// Scenario 1: one seeded schedule (30 users offering 3x the account's RPM, mixed prompt and answer
// lengths, English and Chinese) is replayed from the same moment by every strategy: (a) the openai
// SDK as is, (b) the seed article's backoff, (c) the seed's fixed-interval queue, (d) bottleneck,
// (e) qwen-guard, its refused calls given up, (g) qwen-guard, its refused calls retried after the
// refusal's retryAfterMs (what a client reading Retry-After does). Each strategy runs in its own
// process (at nice 10) and its simulator (same limits) in another, all at once on this machine, so
// they share its noise but not an event loop: one strategy's retry storm does not delay another's
// sends, and no strategy's work delays when its simulator stamps an arrival (_compare-upstream.ts).
// Prints one table, writes bench/results/compare-<full|quick>.svg.
// Scenarios 2 (K accounts against the seed's round robin) and 3 (fallback models against the seed's
// fallback chain): _compare-accounts.ts. Scenario 4 (guard only, at the same time as 2 and 3):
// retrying after exactly the refusal's retryAfterMs, and 20 ms early.
//
// Clock. Scenarios 1 and 4: REAL TIME for everything (simulator timeScale 1, no strategy's clock
// scaled). Full run: the dated snapshot's limits (60 RPM / 100,000 TPM), 180 s of load + 30 s drain;
// --quick: the same shape at 600 RPM / 1,000,000 TPM (qwen-plus's limits; every strategy configured
// for that rate) for 75 s + 15 s drain: shorter, and its busiest 60 s includes the guard's ramp-up.
// Scenarios 2 and 3: 90 virtual s, at real time in the full run (the control) and on a virtual
// clock 2x faster in --quick (every clock of every worker process, _virtual-clock.ts; --time-scale
// overrides). Wall time: full about 6.5 min, --quick about 2.5 min.
import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { countPromptTokens } from '@qwen-guard/simulator'
import { runAccountScenarios } from './_compare-accounts.js'
import { renderChart } from './_compare-chart.js'
import { runExactness, type ExactnessRow } from './_compare-exactness.js'
import { arrivalLags, jain, pct, quantile, runWorkers } from './_compare-run.js'
import { SIM_LATENCY, scheduleOf, type Setup } from './_compare-worker.js'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seed: { type: 'string', default: '12' },
    /** Letters of the strategies to run (default all), e.g. --only e for the guard alone. */
    only: { type: 'string', default: 'abcdeg' },
    'no-chart': { type: 'boolean', default: false },
    /** Scenarios to run (default all), e.g. --scenarios 23. */
    scenarios: { type: 'string', default: '1234' },
    /** Virtual clock speed for scenarios 2 and 3 (default: 2 with --quick, 1 = real time otherwise). */
    'time-scale': { type: 'string' },
  },
  allowPositionals: true, // run.ts passes the bench's name
})

const mode = args.quick ? 'quick' : 'full'
const base = { users: 30, overload: 3, seed: Number(args.seed) }
const setup: Setup = args.quick
  ? { ...base, model: 'qwen-plus', rpm: 600, tpm: 1_000_000, loadMs: 75_000, drainMs: 15_000 }
  : { ...base, model: 'qwen3-max-2025-09-23', rpm: 60, tpm: 100_000, loadMs: 180_000, drainMs: 30_000 }

const scenarios = args.scenarios
const letters = [...'abcdeg'].filter((l) => args.only.includes(l))
const timeScale = Number(args['time-scale'] ?? (args.quick ? 2 : 1))

/** Scenario 1: the six strategies on one account; prints its table and writes the chart. */
async function scenarioOne() {
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
      `pacing is scaled). One process per strategy (nice 10), each with its own simulator in a process of its own (nice 0; ${SIM_LATENCY.ttftMs} ms to first token + ` +
      `${SIM_LATENCY.perTokenMs} ms per token), all started at the same moment.`,
  )

  let load = loadavg()
  const results = await runWorkers(
    letters.map((letter) => ({ letter, setup })),
    1,
    (startAt) => void setTimeout(() => (load = loadavg()), startAt + setup.loadMs - Date.now()),
  )

  const theoretical = Math.min(schedule.length, Math.floor((setup.rpm * runMs) / 60_000))
  const users = [...new Set(schedule.map((a) => a.user))]
  const rows: Record<string, string | number>[] = []
  const headline: string[] = []
  const guardGoals: string[] = []
  for (const r of results) {
    const lane = r.stats.accounts.acct?.[setup.model]
    const refusals = Object.values(r.stats.refused).reduce((a, b) => a + b, 0)
    const done = r.latency.filter((x): x is number => x !== null).sort((a, b) => a - b)
    const perUser = users.map((u) => schedule.filter((a) => a.user === u && r.latency[a.id] !== null).length)
    const busiest = (lane?.maxRequestsPer60s ?? 0) / setup.rpm
    const share = done.length / theoretical
    const fairness = jain(perUser)
    const isGuard = r.name.startsWith('qwen-guard')
    let pass = true
    const goal = (ok: boolean, text: string) => {
      if (!isGuard) return ''
      pass &&= ok
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
    if (isGuard) guardGoals.push(`${r.name}: ${pass ? 'PASS' : 'FAIL'}`)
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
  console.log(arrivalLags(results.map((result) => ({ label: result.name, result }))))
  if (guardGoals.length > 0) console.log(`qwen-guard goals: ${guardGoals.join('; ')}`)
  console.log(
    '\nmarkdown:\n| strategy | completed | upstream 429s | busiest 60 s / RPM | completed / max | p50 / p99 latency | Jain |\n|---|---|---|---|---|---|---|',
  )
  console.log(headline.join('\n'))

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
}

if (scenarios.includes('1')) await scenarioOne()

// Scenarios 2 and 3 in worker processes, and at the same time scenario 4 (the guard alone, in this
// process, real time; it is light).
const exactnessSeconds = args.quick ? 15 : 30
const exactness = scenarios.includes('4') && letters.includes('e') ? runExactness(exactnessSeconds * 1000) : undefined
if (scenarios.includes('2') || scenarios.includes('3'))
  await runAccountScenarios(Number(args.seed), timeScale, args.quick)
if (exactness) printExactness(await exactness, exactnessSeconds)

// Scenario 4: exactness of the guard's retryAfterMs (guard only: the other strategies get no wait to honour).
function printExactness(rows: ExactnessRow[], seconds: number) {
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
