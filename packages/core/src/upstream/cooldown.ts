/**
 * How long a refusal keeps an account x model out of rotation.
 * - requests / tokens / throttling: our meter believed there was room, so either our sends reached
 *   Qwen bunched up by more jitter than the margin absorbs, or something else (another app on the
 *   same account, a lower real limit) is using the quota. The first refusal pauses one emission
 *   interval (enough for jitter, and short enough that the ramp-up rule does not see a cold lane);
 *   each consecutive one doubles it, up to a whole stretched minute (a window's worth drained).
 * - burst: one stretched second (so Qwen's "current second" empties) plus the AIMD decrease.
 * - server / timeout / network: short and growing (0.5 s, 1 s, 2 s ... 30 s).
 * A Retry-After hint from the answer wins when it is given.
 */
import type { PaceLimits } from './pace-limits.js'
import type { RefusalKind } from './types.js'

const SERVER_BASE_MS = 500
const SERVER_CAP_MS = 30_000

export interface CooldownContext {
  kind: RefusalKind
  /** Refusals of this account x model in a row, this one included (>= 1). */
  consecutive: number
  limits: PaceLimits
  timeScale: number
  hintMs?: number
}

/** Milliseconds to cool down; 0 for kinds that say nothing about the account's capacity. */
export function cooldownMs(ctx: CooldownContext): number {
  if (ctx.hintMs !== undefined && Number.isFinite(ctx.hintMs) && ctx.hintMs > 0) return ctx.hintMs
  const doubling = 2 ** Math.min(16, Math.max(0, ctx.consecutive - 1))
  switch (ctx.kind) {
    case 'requests':
    case 'tokens':
    case 'throttling':
      return Math.min(ctx.limits.minuteWindowMs, ctx.limits.spacingMs * doubling)
    case 'burst':
      return ctx.limits.rateWindowMs
    case 'server':
    case 'timeout':
    case 'network':
      return Math.min(SERVER_CAP_MS, SERVER_BASE_MS * doubling) / ctx.timeScale
    default:
      return 0
  }
}
