// A faster clock for one whole bench worker process, so a time-scaled run scales EVERY clock in it
// alike: the simulator's windows and latency, the openai SDK's retry timer, bottleneck, the seed's
// sleeps and the guard's pacing, queue waits, cooldowns and deadlines. (The simulator's own
// `timeScale` scales only the simulator; the guard has no public time-scale option (its upstream
// pool takes one internally, for pacing and cooldowns only); the SDK's retry timer cannot be scaled
// from outside. Scaling the process's clocks covers all of them with one number.)
//
// At scale S, from an anchor moment A (epoch ms, shared by every worker of a run so their clocks
// agree): Date.now() and performance.timeOrigin + performance.now() read A + (real - A) x S, and
// setTimeout / setInterval (global, node:timers, node:timers/promises) wait ms / S real ms. Only
// what runs in this process is scaled: CPU time, loopback and event-loop delays are real, so they
// weigh S times more in virtual time (a conservative bias: the guard's 31 ms jitter budget per
// second shrinks to 31 / S real ms). Installed from the environment when this module is first
// imported (QG_BENCH_TIME_SCALE, QG_BENCH_TIME_ANCHOR): import it before anything else.
import { createRequire, syncBuiltinESMExports } from 'node:module'

const require = createRequire(import.meta.url)

/** The scale this process runs at (1 = real time). */
export const timeScale = Number(process.env.QG_BENCH_TIME_SCALE ?? 1)
const anchor = Number(process.env.QG_BENCH_TIME_ANCHOR ?? Date.now())

/** Virtual epoch ms of a real epoch moment (identity at scale 1). */
export function virtualEpoch(realEpochMs: number): number {
  return anchor + (realEpochMs - anchor) * timeScale
}

/** Epoch ms with sub-ms precision (on this process's clock, virtual or not), comparable between processes. */
export const epoch = () => performance.timeOrigin + performance.now()

/** Environment for a child process that must run on the same virtual clock as `scale`, from now. */
export function virtualClockEnv(scale: number, anchorEpochMs = Date.now()): Record<string, string> {
  return { QG_BENCH_TIME_SCALE: String(scale), QG_BENCH_TIME_ANCHOR: String(anchorEpochMs) }
}

if (timeScale !== 1) {
  if (!(timeScale > 0)) throw new Error(`QG_BENCH_TIME_SCALE must be a positive number, got ${timeScale}`)
  const S = timeScale
  const realDateNow = Date.now.bind(Date)
  const realPerfNow = performance.now.bind(performance)
  const origin = performance.timeOrigin
  Date.now = () => virtualEpoch(realDateNow())
  performance.now = () => virtualEpoch(origin + realPerfNow()) - origin
  const scaled = (ms: unknown) => (typeof ms === 'number' && ms > 0 ? ms / S : ms)

  type TimerFn = (callback: (...args: unknown[]) => void, ms?: unknown, ...args: unknown[]) => unknown
  const wrapTimer =
    (real: TimerFn): TimerFn =>
    (callback, ms, ...args) =>
      real(callback, scaled(ms), ...args)
  type PromiseTimerFn = (ms?: unknown, ...args: unknown[]) => unknown
  const wrapPromiseTimer =
    (real: PromiseTimerFn): PromiseTimerFn =>
    (ms, ...args) =>
      real(scaled(ms), ...args)

  const timers = require('node:timers') as Record<string, TimerFn>
  const promises = require('node:timers/promises') as Record<string, PromiseTimerFn> & {
    scheduler: { wait: PromiseTimerFn }
  }
  const realSetTimeout = globalThis.setTimeout as unknown as TimerFn
  const realSetInterval = globalThis.setInterval as unknown as TimerFn
  const setTimeoutScaled = wrapTimer(realSetTimeout)
  const setIntervalScaled = wrapTimer(realSetInterval)
  Object.assign(globalThis, { setTimeout: setTimeoutScaled, setInterval: setIntervalScaled })
  timers.setTimeout = setTimeoutScaled
  timers.setInterval = setIntervalScaled
  const realWait = promises.scheduler.wait.bind(promises.scheduler)
  promises.setTimeout = wrapPromiseTimer(promises.setTimeout!)
  promises.setInterval = wrapPromiseTimer(promises.setInterval!)
  promises.scheduler.wait = wrapPromiseTimer(realWait)
  syncBuiltinESMExports() // ESM `import { setTimeout } from 'node:timers/promises'` sees the scaled one
}
