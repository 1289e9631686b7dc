/**
 * The relay's cancellation for Node servers, written once for every adapter: a signal that aborts
 * when the client goes away before its answer is finished. Node emits 'close' on the response in
 * both cases; only a close before `writableFinished` means the client left (the guard then stops
 * queueing or streaming and settles at once).
 */
import type { ServerResponse } from 'node:http'

/**
 * Aborts when `res` closes before its answer was finished (the client went away), at once when that
 * already happened (a middleware before the relay, an async `identify`, took longer than the client
 * stayed: its 'close' event is past). Its reason is an Error named `ClientGoneError`, not an
 * AbortError: what a call ended by it rejects with, or a stream errors with (the openai SDK ends a
 * stream's iteration quietly on an AbortError, as if the answer were complete, and calls a failed
 * fetch's AbortError "Request timed out.").
 */
export function clientGoneSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController()
  const gone = () => controller.abort(clientGone())
  if (res.writableFinished) return controller.signal
  // Not `req.destroyed`: a request whose body was read is destroyed while its client still waits.
  if (res.destroyed) {
    gone()
    return controller.signal
  }
  res.once('close', () => {
    if (!res.writableFinished) gone()
  })
  return controller.signal
}

/**
 * Whether `error` is what a call ended by the client going away rejects with: the `ClientGoneError`
 * itself (a stream's iteration, `guard.call`), or the openai SDK's connection error wrapping it (a call
 * dropped before it was sent). The adapters' error handling ends such a request quietly: its client is
 * gone, there is nobody to answer and nothing went wrong.
 */
export function isClientGone(error: unknown): boolean {
  const named = (value: unknown) => value instanceof Error && value.name === 'ClientGoneError'
  return named(error) || (error instanceof Error && named(error.cause))
}

function clientGone(): Error {
  const error = new Error('The client went away before its answer was finished.')
  error.name = 'ClientGoneError'
  return error
}
