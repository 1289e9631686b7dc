/**
 * AIMD pace of one account x model, against Qwen's burst ("growth rate") protection, whose
 * threshold is undocumented and moves with load. A burst refusal halves the pace (never below the
 * ramp's starting rate); every second with a success adds a fixed step back, up to full rate. The
 * pace scales the request spacing (pace-limits.ts). On a memory store it lives here, per instance;
 * on Redis the shared pace (shared-lane-state.ts: halved by any instance's burst refusal, growing
 * back by the same step per second) is `adopt`ed from each take's answer.
 *
 * The ramp-up rule itself (cur + 1 <= max(initialRps, factor x prev) over the guard's own sends in
 * sliding seconds) is checked by the meter from its log, so on Redis it holds across instances.
 */
export const DECREASE_FACTOR = 0.5
export const INCREASE_STEP = 0.1

export class PaceControl {
  private value = 1
  private lastChange = -Infinity

  /** `floor`: the lowest pace (the ramp's initial rate over the model's rps). */
  constructor(readonly floor: number) {}

  get pace(): number {
    return this.value
  }

  decrease(now: number): void {
    this.value = Math.max(this.floor, this.value * DECREASE_FACTOR)
    this.lastChange = now
  }

  /** The pace every instance shares (read from Redis with a take). */
  adopt(pace: number, now: number): void {
    const next = Math.min(1, Math.max(this.floor, pace))
    if (next === this.value) return
    this.value = next
    this.lastChange = now
  }

  /** A success: at most one additive step per `secondMs`. */
  success(now: number, secondMs: number): void {
    if (this.value >= 1 || now - this.lastChange < secondMs) return
    this.value = Math.min(1, this.value + INCREASE_STEP)
    this.lastChange = now
  }
}
