/**
 * The most moments in any sliding second [t, t + 1000) (ms): the per-second count Qwen's limit
 * applies to, taken where the tests' sends leave (their wire stamps) rather than where a loaded
 * simulator stamps their arrival.
 */
export function busiestSecond(moments: readonly number[]): number {
  const sorted = [...moments].sort((a, b) => a - b)
  let best = 0
  for (let lo = 0, hi = 0; hi < sorted.length; hi++) {
    while (sorted[hi]! - sorted[lo]! >= 1000) lo++
    best = Math.max(best, hi - lo + 1)
  }
  return best
}
