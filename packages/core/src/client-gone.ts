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
 * Whether `error` ended a call because this response's own client went away: it is, or wraps (as its
 * `cause`, a few levels deep: the openai SDK's connection error, an app's own wrapper), a
 * `ClientGoneError`, and `res` closed before its answer was finished. The adapters' error handling
 * then ends the request quietly: nobody is left to answer and nothing went wrong. A `ClientGoneError`
 * from another request's client (a client kept across requests) is an ordinary error here.
 */
export function isClientGone(error: unknown, res: ServerResponse): boolean {
  if (!res.destroyed || res.writableFinished) return false
  let value: unknown = error
  for (let depth = 0; depth < 5 && value instanceof Error; depth++) {
    if (value.name === 'ClientGoneError') return true
    value = value.cause
  }
  return false
}

function clientGone(): Error {
  const error = new Error('The client went away before its answer was finished.')
  error.name = 'ClientGoneError'
  return error
}
