/**
 * The send -> wire part of the pacer's jitter allowance (send-delays.ts): how long undici, the HTTP
 * client behind Node's global `fetch`, takes from creating a request to the upstream's origin to
 * having written its body to the socket (opening a connection, a busy event loop). Read from
 * undici's diagnostics channels, so nothing in the call path changes; a custom `upstream.fetch` that
 * is not undici's simply adds no samples.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { SendDelays } from './send-delays.js'

interface UndiciRequest {
  origin?: unknown
}

/** Feeds `delays.wire()` for requests to `baseURL`'s origin until the returned function is called. */
export function watchWireDelays(baseURL: string, delays: SendDelays): () => void {
  let origin: string
  try {
    origin = new URL(baseURL).origin
  } catch {
    return () => undefined
  }
  const created = new WeakMap<object, number>()
  const onCreate = (message: unknown) => {
    const request = (message as { request?: UndiciRequest } | undefined)?.request
    if (request && typeof request === 'object' && originOf(request) === origin) created.set(request, delays.now())
  }
  const onBodySent = (message: unknown) => {
    const request = (message as { request?: UndiciRequest } | undefined)?.request
    const at = request && typeof request === 'object' ? created.get(request) : undefined
    if (at === undefined) return
    created.delete(request!)
    delays.wire(delays.now() - at)
  }
  subscribe('undici:request:create', onCreate)
  subscribe('undici:request:bodySent', onBodySent)
  return () => {
    unsubscribe('undici:request:create', onCreate)
    unsubscribe('undici:request:bodySent', onBodySent)
  }
}

function originOf(request: UndiciRequest): string | undefined {
  const origin = request.origin
  if (typeof origin === 'string') return origin.replace(/\/$/, '')
  if (origin instanceof URL) return origin.origin
  return undefined
}
