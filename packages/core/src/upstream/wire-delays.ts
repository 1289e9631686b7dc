/**
 * The end of a send's grant -> wire delay (send-delays.ts): when undici, the HTTP client behind
 * Node's global `fetch`, has written the request's body to the socket (after opening a connection,
 * waiting for a busy event loop). Read from undici's diagnostics channels, so nothing in the call
 * path changes; a custom `upstream.fetch` that is not undici's reports nothing (its sends are sampled
 * at the next turn of the loop instead).
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { PendingSend, SendDelays } from './send-delays.js'

interface UndiciRequest {
  origin?: unknown
}

/** Ends the samples of sends to `baseURL`'s origin when undici has written them, until the returned function is called. */
export function watchWireDelays(baseURL: string, delays: SendDelays): () => void {
  let origin: string
  try {
    origin = new URL(baseURL).origin
  } catch {
    return () => undefined
  }
  const created = new WeakMap<object, PendingSend>()
  const onCreate = (message: unknown) => {
    const request = (message as { request?: UndiciRequest } | undefined)?.request
    if (!request || typeof request !== 'object' || originOf(request) !== origin) return
    // Requests are created in the order their sends started (send-delays.ts).
    const pending = delays.claim()
    if (pending) created.set(request, pending)
  }
  const onBodySent = (message: unknown) => {
    const request = (message as { request?: UndiciRequest } | undefined)?.request
    const pending = request && typeof request === 'object' ? created.get(request) : undefined
    if (!pending) return
    created.delete(request!)
    delays.wired(pending)
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
