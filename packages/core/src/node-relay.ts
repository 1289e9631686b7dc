/**
 * The relay as a plain `node:http` request listener: for a server that answers relay traffic before
 * any framework sees it. Express changes the prototype of every request and response it handles,
 * which keeps them alive through young-generation collections and doubles the relay's latency tail
 * (bench/RESULTS.md, "The relay's added latency by framework"); a listener in front of the app
 * avoids that for the relay's own requests and leaves every other request to the app.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connectionGoneSignal } from './client-gone.js'
import type { Guard } from './guard-types.js'
import { normalizePrefix, pathUnder } from './relay-prefix.js'
import { checkRelayOptions, createRelay, type RelayOptions } from './relay.js'
import { sendRelayResponse } from './send-relay-response.js'
import type { Identity, IdentityInput } from './types.js'

export interface NodeRelayOptions extends RelayOptions {
  /** Where the relay answers: `POST {prefix}/chat/completions`, `GET {prefix}/models`. Default: '/v1'. */
  prefix?: string
  /**
   * Whose quota a request uses. Default: the client address from the socket (IPv6 grouped by /64),
   * never from a header. A missing or blank `user` is charged to the client address too; a throw or
   * rejection is answered with a generic 500 and reported to `onError` (a QwenGuardError with its own
   * answer), and so is an async one that does not settle within the guard's `upstream.timeoutMs`.
   */
  identify?: (req: IncomingMessage) => IdentityInput | Promise<IdentityInput>
}

/**
 * Handles one request. Under the prefix it answers (and resolves when the answer is written); for
 * any other URL it calls `next` when given, else answers the relay's 404.
 */
export type NodeRelay = (req: IncomingMessage, res: ServerResponse, next?: () => void) => Promise<void>

/**
 * The OpenAI-compatible relay (`createRelay`) for `node:http`, `https` or anything that hands out
 * Node's request and response: reads the body itself (size-limited), follows the client going away,
 * writes JSON or SSE answers with the guard's headers. Never rejects (a throw of `next` aside).
 *
 * @example
 * const relay = createNodeRelay(guard, { prefix: '/v1' })
 * // the relay first, the Express app for everything else
 * http.createServer((req, res) => void relay(req, res, () => app(req, res))).listen(3000)
 */
export function createNodeRelay(guard: Guard, options: NodeRelayOptions = {}): NodeRelay {
  const relay = createRelay(guard, checkRelayOptions(options, 'createNodeRelay', ['prefix', 'identify']))
  const prefix = normalizePrefix(options.prefix ?? '/v1')
  const identify = options.identify ?? ((): Identity => ({}))
  return async function qwenGuardNodeRelay(req, res, next) {
    const path = pathUnder(prefix, req.url ?? '/')
    if (path === undefined && next) return next()
    const signal = connectionGoneSignal(res) // the guard stops queueing or streaming and settles at once
    const answer = await relay({
      method: req.method ?? 'GET',
      // Not under the prefix (no `next`): the whole URL, which the relay answers with its 404.
      path: path ?? req.url ?? '/',
      mountPath: path === undefined ? '' : prefix,
      headers: req.headers,
      body: req,
      identity: () => identify(req),
      remoteAddress: req.socket.remoteAddress,
      signal,
    })
    await sendRelayResponse(answer, res)
  }
}
