// Runs strategies of `pnpm bench compare` side by side: one worker process per strategy (each with its
// own simulator, in a child process of the worker), all started at the same moment, on the real clock
// or on one shared virtual clock (_virtual-clock.ts). Also the figures every scenario prints.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Arrived } from './_compare-chart.js'
import type { FromWorker, Setup, ToWorker } from './_compare-worker.js'
import { virtualClockEnv } from './_virtual-clock.js'

export type WorkerResult = Extract<FromWorker, { type: 'done' }>

const folder = fileURLToPath(new URL('.', import.meta.url))

/**
 * Forks one worker per job, waits until every one has its simulator listening, gives them one start
 * moment and resolves with their reports (in job order). `onStart` is called with the start moment
 * (real epoch ms). `timeScale` > 1 runs every worker on one virtual clock that fast.
 */
export async function runWorkers(
  jobs: { letter: string; setup: Setup }[],
  timeScale = 1,
  onStart?: (startAt: number) => void,
): Promise<WorkerResult[]> {
  const env = { ...process.env, ...virtualClockEnv(timeScale) }
  const workers = jobs.map(({ letter, setup }) => {
    const child = fork(`${folder}_compare-worker.ts`, [], { execArgv: ['--import', 'tsx', '--conditions=source'], env })
    child.send({ type: 'setup', letter, setup } satisfies ToWorker)
    const ready = new Promise<void>((resolve) => child.once('message', () => resolve()))
    const done = new Promise<WorkerResult>((resolve, reject) => {
      child.on('message', (m: FromWorker) => m.type === 'done' && resolve(m))
      child.once('exit', (code) => reject(new Error(`worker ${letter} exited with ${code} before reporting`)))
    })
    done.catch(() => undefined)
    return { child, ready, done }
  })
  await Promise.all(workers.map((w) => w.ready))
  const startAt = Date.now() + 500
  for (const w of workers) w.child.send({ type: 'start', startAt } satisfies ToWorker)
  onStart?.(startAt)
  return Promise.all(workers.map((w) => w.done))
}

export const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
export const pct = (x: number) => `${(100 * x).toFixed(1)} %`

/** Jain's fairness index: 1 = equal shares, 1/n = one user got everything. */
export function jain(values: number[]): number {
  const sum = values.reduce((a, b) => a + b, 0)
  const squares = values.reduce((a, b) => a + b * b, 0)
  return squares === 0 ? 1 : (sum * sum) / (values.length * squares)
}

/** The most calls the simulator accepted in any sliding 60 s, over all its accounts and models. */
export function busiestMinute(arrived: Arrived[]): number {
  const times = arrived
    .filter((c) => c.accepted)
    .map((c) => c.t)
    .sort((a, b) => a - b)
  let best = 0
  for (let lo = 0, hi = 0; hi < times.length; hi++) {
    while (times[hi]! - times[lo]! >= 60_000) lo++
    best = Math.max(best, hi - lo + 1)
  }
  return best
}

/**
 * One line: each strategy's arrival lag p99 / max (the simulator's stamp minus the write of the
 * request to its socket, ms), what the harness adds between a sender and Qwen's clock. A guard whose
 * sends are spaced right on the wire can still be refused when this lag exceeds its margin's slack.
 */
export function arrivalLags(results: { label: string; result: WorkerResult }[]): string {
  const each = results.map(({ label, result: { lags } }) =>
    lags.length === 0
      ? `${label} (none measured)`
      : `${label} ${quantile(lags, 0.99).toFixed(1)} / ${lags[lags.length - 1]!.toFixed(1)}`,
  )
  return `  arrival lag p99 / max ms (simulator's stamp - write to the socket): ${each.join('; ')}`
}

/** Every refusal the simulator answered (its `stats().refused`, all codes). */
export const upstreamRefusals = (r: WorkerResult) => Object.values(r.stats.refused).reduce((a, b) => a + b, 0)
