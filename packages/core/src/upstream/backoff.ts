/**
 * Retry waits for the call loop. Full jitter (uniform in [0, min(cap, base * 2^(attempt-1))]) keeps
 * many callers refused at once from coming back at once. A hint from the refusal (Retry-After or a
 * cooldown the pool computed) is a floor: waiting less is known to fail, so only a little jitter is
 * added on top of it. A hint shorter than half the attempt's backoff ceiling (a `Retry-After` of 1 ms,
 * say: upstream data is untrusted) does not shorten the backoff: the wait is then at least that half.
 */
export const BACKOFF_BASE_MS = 250
export const BACKOFF_CAP_MS = 8_000

/** Milliseconds to wait before attempt `attempt + 1` (attempt counts from 1). */
export function backoffDelay(attempt: number, hintMs?: number, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(attempt))
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1))
  if (hintMs !== undefined && Number.isFinite(hintMs) && hintMs > 0) {
    const floor = Math.max(hintMs, ceiling / 2)
    // Spread the herd over up to 10 % (at most 1 s) after the floor.
    return Math.ceil(floor + random() * Math.min(1_000, floor * 0.1))
  }
  return Math.ceil(random() * ceiling)
}
