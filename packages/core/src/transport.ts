/**
 * How one attempt reaches Qwen over HTTP: a POST of the request's JSON, answered with a status, headers
 * and a body read once (as text, or as bytes for a stream).
 *
 * Default: undici's `request` (undici is the HTTP client inside Node's own `fetch`), without the WHATWG
 * layer `fetch` puts on top: no `Request`, `Headers`, web streams and transferable objects per call.
 * That layer was most of the CPU a relayed call cost (bench/RESULTS.md, "The upstream transport").
 * Connections are kept alive by undici's global dispatcher, as `fetch` does.
 *
 * A fetch is used instead when the app gives one (`upstream.fetch`), or when `globalThis.fetch` is no
 * longer the one Node had when this module loaded (a test stub, a mock server's interceptor, a tracing
 * wrapper installed later), so replacing `globalThis.fetch` keeps working as it always did. A mock
 * installed before the guard was imported is not detected: pass it as `upstream.fetch`.
 */
import { request } from 'undici'
import type { ByteStream } from './sse.js'

/** What the call layer reads from Qwen's answer to one attempt. */
export interface UpstreamResponse {
  status: number
  /** Lower-case names (undici) or a `Headers` (fetch). */
  headers: Headers | Record<string, string | undefined>
  /** Reads the whole body as UTF-8 text (once). */
  text(): Promise<string>
  /**
   * The body as bytes, for a stream (once). Stopping the iteration early (`return()`) closes the
   * connection; so does the attempt's abort signal.
   */
  body(): ByteStream
}

export interface UpstreamPostInit {
  headers: Record<string, string>
  body: string
  signal: AbortSignal
}

/** Sends one POST; rejects when no answer came (connection refused or reset, aborted). */
export type UpstreamPost = (url: string, init: UpstreamPostInit) => Promise<UpstreamResponse>

const nodeFetch = globalThis.fetch

/**
 * The transport for `upstream.fetch`: that fetch when given, else undici's request while
 * `globalThis.fetch` is still Node's own (else the replacement, looked up at each call).
 */
export function upstreamPost(customFetch: typeof fetch | undefined): UpstreamPost {
  if (customFetch) return viaFetch(customFetch)
  return (url, init) => (globalThis.fetch === nodeFetch ? viaUndici(url, init) : viaFetch(globalThis.fetch)(url, init))
}

async function viaUndici(url: string, init: UpstreamPostInit): Promise<UpstreamResponse> {
  const answer = await request(url, { method: 'POST', headers: init.headers, body: init.body, signal: init.signal })
  return {
    status: answer.statusCode,
    headers: flatHeaders(answer.headers),
    text: () => answer.body.text(),
    body: () => answer.body,
  }
}

function viaFetch(fetchFn: typeof fetch): UpstreamPost {
  return async (url, init) => {
    // redirect 'manual': a 3xx comes back as it is, as on undici's path (a prompt is never re-sent elsewhere).
    const request = {
      method: 'POST',
      headers: init.headers,
      body: init.body,
      signal: init.signal,
      redirect: 'manual' as const,
    }
    const response = await fetchFn(url, request)
    return {
      status: response.status,
      headers: response.headers,
      text: () => response.text(),
      body: () => response.body ?? emptyBody(),
    }
  }
}

async function* emptyBody(): AsyncGenerator<Uint8Array> {}

/** A header sent more than once reads as its values joined by ', ' (as `Headers.get` does). */
function flatHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const flat: Record<string, string | undefined> = {}
  for (const name in headers) {
    const value = headers[name]
    flat[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return flat
}
