/**
 * The limits one account x model is paced under, derived from its model spec, the safety margin,
 * the AIMD pace factor and (for time-scaled simulations) a time scale.
 *
 * The safety margin m is applied by STRETCHING each window rather than by shrinking each limit:
 * "at most L per W" is enforced as "at most L per W / m" (exactly, on a sliding log). Both give a
 * sustained rate of m x L / W, but stretching
 *   - keeps whole requests usable: 10 rps at m = 0.97 still allows 10 requests in a window
 *     (shrinking would give floor(9.7) = 9, i.e. 90 % utilisation);
 *   - lets one request use the whole per-second token budget (a large prompt still fits);
 *   - tolerates (1/m - 1) x W of transport jitter: any upstream window of length W holds requests
 *     the guard sent within at most W + (1/m - 1) W = W / m when jitter is below that, so upstream
 *     never counts more than L in its window. At m = 0.97 that is 31 ms per second, 1.86 s per minute.
 */
import type { ResolvedModel } from '../types.js'

export interface PaceLimits {
  /** Stretched per-second window (1000 / m ms) and its limits. */
  rateWindowMs: number
  rps: number
  tps: number
  /** Stretched per-minute window (60000 / m ms) and its limits. */
  minuteWindowMs: number
  rpm: number
  tpm: number
  /** Ramp-up windows: the last second and the two last seconds (unstretched). */
  rampWindowMs: number
  /** 0 disables the ramp rule. */
  rampInitial: number
  rampFactor: number
  /** GCRA emission interval of requests (smooths sends inside the window), after the pace factor. */
  spacingMs: number
}

export interface PaceConfig {
  safetyMargin: number
  rampUp: { initialRps: number; factor: number } | false
  /** Simulated ms per real ms (1 in production). Windows shrink by this factor. */
  timeScale: number
}

export function paceLimits(model: ResolvedModel, config: PaceConfig, pace: number): PaceLimits {
  const m = config.safetyMargin
  const second = 1000 / config.timeScale
  // An rps below 1 would forbid every request; treat it as one per (stretched) second.
  const rps = Math.max(1, model.rps)
  return {
    rateWindowMs: second / m,
    rps,
    tps: model.tps,
    minuteWindowMs: (60 * second) / m,
    rpm: Math.max(1, model.rpm),
    tpm: model.tpm,
    rampWindowMs: second,
    rampInitial: config.rampUp ? config.rampUp.initialRps : 0,
    rampFactor: config.rampUp ? config.rampUp.factor : 0,
    spacingMs: second / (m * rps * pace),
  }
}

/** Largest token reservation this account x model can ever admit (the meter's per-window budgets). */
export function maxTokensPerRequest(model: ResolvedModel): number {
  return Math.min(model.tps, model.tpm)
}
