import { performance } from 'node:perf_hooks'

/**
 * Simulated time: real monotonic time since start multiplied by `timeScale`, plus a manual offset
 * (`advance`). Monotonic so that wall-clock jumps cannot slide or freeze the windows.
 */
export class SimClock {
  private origin = performance.now()
  private offset = 0

  constructor(readonly timeScale: number) {}

  /** Simulated ms since start. */
  now(): number {
    return (performance.now() - this.origin) * this.timeScale + this.offset
  }

  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError('advance(ms): ms must be >= 0')
    this.offset += ms
  }

  /** Real ms to wait for `simMs` of simulated time. */
  toReal(simMs: number): number {
    return simMs / this.timeScale
  }

  reset(): void {
    this.origin = performance.now()
    this.offset = 0
  }
}
