/**
 * The relay's cancellation for Node servers, written once for every adapter: a signal that aborts
 * when the client goes away before its answer is finished. Node emits 'close' on the response in
 * both cases; only a close before `writableFinished` means the client left (the guard then stops
 * queueing or streaming and settles at once).
 */
import { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

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
  // A pipelined request waiting for its turn: its response has no socket yet, and when the client
  // leaves Node destroys the waiting request without a 'close' on its response, so the request's
  // socket is followed until the response is done.
  const waitingOn = requestSocketOf(res)
  // Not `req.destroyed`: a request whose body was read is destroyed while its client still waits.
  if (res.destroyed || waitingOn?.destroyed) {
    gone()
    return controller.signal
  }
  const onClose = () => {
    if (!res.writableFinished) gone()
  }
  waitingOn?.once('close', onClose)
  res.once('close', () => {
    waitingOn?.off('close', onClose)
    onClose()
  })
  return controller.signal
}

/**
 * `clientGoneSignal` for a relay, made once per HTTP/1 connection instead of once per request: it
 * aborts when the connection closes, which for a request still being answered is its client going
 * away (an HTTP/1 response closes before it is finished only with its socket). One AbortController a
 * request costs about 3 KB of garbage on a relayed call. For the relays only (createNodeRelay, the
 * adapters' `proxy()`): their call is over when the answer is written, so a later close of the
 * connection reaches nobody; a signal kept past its answer (`req.qwen` used after responding) takes
 * `clientGoneSignal`, which never aborts after the answer is finished. A pipelined request waiting
 * for its turn shares its connection's signal (its response has no socket yet: the request's is
 * used). A response finished or closed, or not Node's HTTP/1 response (HTTP/2's compatibility API),
 * gets `clientGoneSignal(res)`.
 */
export function connectionGoneSignal(res: ServerResponse): AbortSignal {
  // The request's socket: a pipelined request's response has none until its turn comes.
  const socket = res.socket ?? requestSocketOf(res)
  if (!(res instanceof ServerResponse) || !socket || res.writableFinished || res.destroyed || socket.destroyed)
    return clientGoneSignal(res)
  let signal = connectionSignals.get(socket)
  if (!signal) {
    const controller = new AbortController()
    signal = controller.signal
    connectionSignals.set(socket, signal)
    socket.once('close', () => controller.abort(clientGone()))
  }
  return signal
}

const connectionSignals = new WeakMap<Socket, AbortSignal>()

/** The request's socket, while its response has none of its own yet (a pipelined request waiting for its turn). */
function requestSocketOf(res: ServerResponse): Socket | null | undefined {
  return res.socket ? undefined : (res as { req?: { socket?: Socket | null } }).req?.socket
}

/**
 * Whether `error` ended a call because this response's own client went away: it is, or wraps (as its
 * `cause`, a few levels deep: the openai SDK's connection error, an app's own wrapper), a
 * `ClientGoneError`, and `res` closed before its answer was finished (or, for a pipelined request
 * still waiting for its turn, its connection closed). The adapters' error handling
 * then ends the request quietly: nobody is left to answer and nothing went wrong. A `ClientGoneError`
 * from another request's client (a client kept across requests) is an ordinary error here.
 */
export function isClientGone(error: unknown, res: ServerResponse): boolean {
  if (res.writableFinished || !(res.destroyed || requestSocketOf(res)?.destroyed)) return false
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
