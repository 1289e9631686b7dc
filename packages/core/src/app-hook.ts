/**
 * The app's own code that a call waits for (`quotas(identity)`, an adapter's `identify`, an
 * `upstream.fetch`) is bounded like every other wait of the call: a lookup that never settles, or a
 * fetch that ignores its signal, would otherwise hold the call, its client's connection and its
 * closures for good, past `upstream.timeoutMs` and past an abort.
 */
import { onAbort } from './abort-followers.js'

/**
 * What an app's hook returned, bounded. A plain value is returned as it is (a synchronous hook stays
 * synchronous). A promise becomes one that settles as it does, or rejects with the signal's reason
 * when `signal` aborts first, or with an Error naming the hook once `timeoutMs` (ms) pass; the
 * hook's late result is then dropped (a late rejection too: it is handled here).
 *
 * @param hook named in the timeout's message, e.g. `'quotas(identity)'`
 * @param timeoutMs undefined: the signal alone bounds the wait (it aborts at the call's deadline)
 */
export function withinDeadline<T>(
  result: PromiseLike<T>,
  hook: string,
  timeoutMs: number | undefined,
  signal?: AbortSignal,
): Promise<T>
export function withinDeadline<T>(
  result: T | PromiseLike<T>,
  hook: string,
  timeoutMs: number | undefined,
  signal?: AbortSignal,
): T | Promise<T>
export function withinDeadline<T>(
  result: T | PromiseLike<T>,
  hook: string,
  timeoutMs: number | undefined,
  signal?: AbortSignal,
): T | Promise<T> {
  if (!isPromiseLike(result)) return result
  if (signal?.aborted) {
    unawaited(result)
    return Promise.reject(signal.reason as Error)
  }
  return new Promise<T>((resolve, reject) => {
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            finish()
            reject(new Error(`${hook} did not settle within ${timeoutMs} ms (upstream.timeoutMs): the call was ended`))
          }, timeoutMs)
    const stopFollowing = signal
      ? onAbort(signal, () => {
          finish()
          reject(signal.reason as Error)
        })
      : undefined
    function finish() {
      clearTimeout(timer)
      stopFollowing?.()
    }
    Promise.resolve(result).then(
      (value) => {
        finish()
        resolve(value)
      },
      (error: unknown) => {
        finish()
        reject(error as Error)
      },
    )
  })
}

/**
 * Where a promise an app's code returned is not waited for (a listener's, an `onError`'s, an
 * estimator's, a lookup given up on), its rejection goes to `onRejected` (default: dropped) instead
 * of becoming an unhandled rejection, which ends a Node process by default. Anything else: nothing.
 */
export function unawaited(value: unknown, onRejected: (reason: unknown) => void = () => undefined): void {
  if (isPromiseLike(value)) Promise.resolve(value).then(undefined, onRejected)
}

/** True for a promise or any thenable (an app's hook may return either). */
export function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as PromiseLike<T> | null | undefined)?.then === 'function'
}
