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
 *
 * The jitter the path really has is measured (send-delays.ts): a window is W + J when the measured
 * allowance J is larger than the margin's stretch (a busy machine, a slow store), so the stretch is
 * the floor and the measurement only ever lengthens a window. The request and token spacing follow
 * the stretched second, so a lane sends at the rate its window allows instead of clumping at its ends.
 */
import type { ResolvedModel } from '../types.js'

export interface PaceLimits {
  /** The unstretched second at the time scale (1000 / timeScale ms). */
  secondMs: number
  /** The measured jitter allowance these limits were built with, real ms (0: none). */
  jitterMs: number
  /** Stretched per-second window (max(1000 / m, 1000 + J) ms) and its limits. */
  rateWindowMs: number
  rps: number
  tps: number
  /** Stretched per-minute window (max(60000 / m, 60000 + J) ms) and its limits. */
  minuteWindowMs: number
  rpm: number
  tpm: number
  /**
   * Ramp-up windows, widened and narrowed by the ramp's jitter budget J (`rampJitterMs`, plus
   * `backdateMs`) so the rule
   * still holds where upstream counts arrivals: "the last second" is the last 1 s + J (every send
   * that can arrive in upstream's last second), "the second before" is what is in the last 2 s - J
   * but not in the last 1 s + J (only sends that must arrive in upstream's second before).
   */
  rampWindowMs: number
  rampPairWindowMs: number
  /**
   * How far back a take may record its entry: to the moment it became admissible (the window or
   * spacing that held it freed), when that was at most this long ago (sliding-log.ts, "Entry time").
   * A quarter of the margin's stretch of the second, at most 5 ms (real: timer and round-trip
   * lateness), and no more than the ramp windows' budget leaves (they are widened by it too).
   */
  backdateMs: number
  /** 0 disables the ramp rule. */
  rampInitial: number
  rampFactor: number
  /** GCRA emission interval of requests (smooths sends inside the window), after the pace factor. */
  spacingMs: number
  /**
   * GCRA emission interval per token, after the pace factor: a request's interval is the larger of
   * spacingMs and tokens x tokenSpacingMs, so a token-bound lane spreads its sends over the window
   * instead of sending a window's worth at once and waiting (see emissionMs).
   */
  tokenSpacingMs: number
}

export interface PaceConfig {
  safetyMargin: number
  rampUp: { initialRps: number; factor: number } | false
  /** Simulated ms per real ms (1 in production). Windows shrink by this factor. */
  timeScale: number
  /**
   * The measured jitter allowance J, real ms (send-delays.ts), read whenever a lane's limits are
   * built. Absent: 0 (the margin's stretch alone).
   */
  jitterMs?: () => number
}

/** The most a take's entry is ever backdated, real ms (PaceLimits.backdateMs). */
const MAX_BACKDATE_MS = 5

/**
 * `jitterMs`: the measured allowance J in real ms (default 0); each window is max(W / m, W + J), W its
 * length at the time scale.
 */
export function paceLimits(model: ResolvedModel, config: PaceConfig, pace: number, jitterMs = 0): PaceLimits {
  const m = config.safetyMargin
  const second = 1000 / config.timeScale
  // At most one second: beyond that the measurement is broken, not the path (and the logs keep
  // one second of entries past the minute window for a window that grows, sliding-log.ts).
  const jitter = Number.isFinite(jitterMs) && jitterMs > 0 ? Math.min(jitterMs, second) : 0
  const rateWindowMs = Math.max(second / m, second + jitter)
  // An rps below 1 would forbid every request; treat it as one per (stretched) second.
  const rps = Math.max(1, model.rps)
  const rampJitter = config.rampUp ? rampJitterMs(second, m, config.rampUp.factor) : 0
  // A backdated entry (sliding-log.ts) is sent up to backdateMs after its recorded time: the rate
  // windows' measured J covers that, the ramp windows' fixed budget must hold it too, within its cap.
  const rampRoom = config.rampUp ? rampJitterCapMs(second, config.rampUp.factor) - rampJitter : Infinity
  const backdateMs = Math.max(0, Math.min(MAX_BACKDATE_MS, (second / m - second) / 4, rampRoom))
  return {
    secondMs: second,
    jitterMs: jitter,
    rateWindowMs,
    rps,
    tps: model.tps,
    minuteWindowMs: Math.max((60 * second) / m, 60 * second + jitter),
    rpm: Math.max(1, model.rpm),
    tpm: model.tpm,
    backdateMs,
    rampWindowMs: second + rampJitter + backdateMs,
    rampPairWindowMs: 2 * second - rampJitter - backdateMs,
    rampInitial: config.rampUp ? config.rampUp.initialRps : 0,
    rampFactor: config.rampUp ? config.rampUp.factor : 0,
    spacingMs: rateWindowMs / (rps * pace),
    tokenSpacingMs: model.tps > 0 && Number.isFinite(model.tps) ? rateWindowMs / (model.tps * pace) : 0,
  }
}

/** The GCRA interval one request of `tokens` takes: its share of the request or of the token rate. */
export function emissionMs(limits: PaceLimits, tokens: number): number {
  return Math.max(limits.spacingMs, tokens * limits.tokenSpacingMs)
}

/**
 * The ramp rule's jitter budget: the margin's (1/m - 1) x 1 s, like the rate windows (31 ms at the
 * default 0.97), but at most (factor - 1) / (4 (factor + 2)) of a second (36 ms at factor 1.5, so the
 * cap binds below m = 0.966). Counting "the last second" over 1 s + J and "the second before" over
 * the 1 s - 2J inside it, a lane sending steadily R per second passes the rule only while about
 * R (1 + j) + 1 <= factor x R (1 - 2j), j = J / 1 s: a larger J would make the rule throttle a steady
 * lane below its rate limit (half the j where that starts, for whole-request rounding; tested for
 * 1-100 rps at margins 0.8-0.99).
 */
export function rampJitterMs(secondMs: number, margin: number, factor: number): number {
  return Math.max(0, Math.min(secondMs * (1 / margin - 1), rampJitterCapMs(secondMs, factor)))
}

/** The most the ramp windows may be widened and narrowed by at `factor` (see rampJitterMs). */
function rampJitterCapMs(secondMs: number, factor: number): number {
  return (secondMs * (factor - 1)) / (4 * (factor + 2))
}
