/**
 * Following an AbortSignal that many calls may share (a caller's for a batch of calls, a relay
 * connection's for its pipelined requests) with ONE 'abort' listener on it, however many waits and
 * attempts follow it: a listener each tripped Node's MaxListenersExceededWarning ("Possible
 * EventTarget memory leak") on the caller's signal from the eleventh call in flight. The listener goes
 * when its last follower stops following, so a finished call leaves nothing on the signal.
 */

interface Followers {
  listeners: Set<() => void>
  fire: () => void
}

const followed = new WeakMap<AbortSignal, Followers>()

/**
 * Calls `listener` once when `signal` aborts (not when it already has: callers check `aborted`
 * first). Returns what stops following; idempotent. A listener that throws does not keep the others
 * from being called (its error is thrown on its own, as an EventTarget listener's would be).
 */
export function onAbort(signal: AbortSignal, listener: () => void): () => void {
  let followers = followed.get(signal)
  if (!followers) {
    const listeners = new Set<() => void>()
    const fire = () => {
      followed.delete(signal)
      for (const follower of listeners) {
        try {
          follower()
        } catch (error) {
          queueMicrotask(() => {
            throw error
          })
        }
      }
      listeners.clear()
    }
    followers = { listeners, fire }
    followed.set(signal, followers)
    signal.addEventListener('abort', fire, { once: true })
  }
  const { listeners, fire } = followers
  const own = () => listener()
  listeners.add(own)
  return () => {
    if (!listeners.delete(own) || listeners.size > 0) return
    signal.removeEventListener('abort', fire)
    if (followed.get(signal) === followers) followed.delete(signal)
  }
}

/**
 * Waits `ms` (nothing for 0 or less), or rejects with the signal's reason as soon as it aborts, at
 * once when it already has (node:timers/promises would reject with an AbortError of its own, and add
 * a listener per wait).
 */
export function abortableDelay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason as unknown)
  if (ms <= 0) return Promise.resolve()
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      stop?.()
      resolve()
    }, ms)
    const stop = signal
      ? onAbort(signal, () => {
          clearTimeout(timer)
          reject(signal.reason as unknown)
        })
      : undefined
  })
}
