/**
 * The relay's cancellation for Node servers, written once for every adapter: a signal that aborts
 * when the client goes away before its answer is finished. Node emits 'close' on the response in
 * both cases; only a close before `writableFinished` means the client left (the guard then stops
 * queueing or streaming and settles at once).
 */
import type { ServerResponse } from 'node:http'

/** Aborts when `res` closes before its answer was finished (the client went away). */
export function clientGoneSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController()
  res.once('close', () => {
    if (!res.writableFinished) controller.abort()
  })
  return controller.signal
}
