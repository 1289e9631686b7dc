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
import { pipeline, Readable } from 'node:stream'
import zlib from 'node:zlib'
import { DecoratorHandler, type Dispatcher, getGlobalDispatcher, request } from 'undici'
import { withinDeadline } from './app-hook.js'
import { discard, readText } from './read-text.js'
import type { ByteStream } from './sse.js'

/** What the call layer reads from Qwen's answer to one attempt. */
export interface UpstreamResponse {
  status: number
  /** Lower-case names (undici) or a `Headers` (fetch). */
  headers: Headers | Record<string, string | undefined>
  /**
   * Reads the whole body as UTF-8 text (once). Rejects when it holds more than `MAX_ANSWER_BYTES`
   * (decoded): a chat completion is far smaller, and an upstream must not be able to fill memory.
   */
  text(): Promise<string>
  /**
   * The body as bytes, for a stream (once). Stopping the iteration early (`return()`) closes the
   * connection; so does the attempt's abort signal.
   */
  body(): ByteStream
}

/**
 * What cancels one attempt: an AbortSignal, or any object with its `aborted`, `reason` and `'abort'`
 * listeners (AttemptAbort below: an AbortController and its signal cost about 3 KB a call). undici's request takes it as it is (an EventTarget); a fetch gets an AbortSignal
 * that follows it.
 */
export interface AttemptSignal {
  readonly aborted: boolean
  readonly reason: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

/**
 * An attempt's cancellation without an AbortController (call.ts makes one per attempt): a listener
 * list and the reason. Like an AbortSignal, it aborts once, calls each listener once, and a listener
 * added after the abort is not called (the transport reads `aborted` first). Its listeners are the
 * transport's own (undici's request, or the AbortSignal made for a fetch), which do not throw.
 */
export class AttemptAbort implements AttemptSignal {
  aborted = false
  reason: unknown = undefined
  #listeners: Array<() => void> = []

  addEventListener(_type: 'abort', listener: () => void): void {
    if (!this.aborted) this.#listeners.push(listener)
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const at = this.#listeners.indexOf(listener)
    if (at >= 0) this.#listeners.splice(at, 1)
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listeners = this.#listeners
    this.#listeners = []
    for (const listener of listeners) listener()
  }
}

export interface UpstreamPostInit {
  headers: Record<string, string>
  body: string
  signal: AttemptSignal
}

/** Sends one POST; rejects when no answer came (connection refused or reset, aborted). */
export type UpstreamPost = (url: string, init: UpstreamPostInit) => Promise<UpstreamResponse>

/** Error codes that mean the peer took too long (undici's, a socket's), whichever transport failed. */
const TIMEOUT_CODES = new Set([
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
])

/**
 * Why an attempt got no answer (or its body broke), named by the error's code rather than its message,
 * so undici's request and fetch (which wraps the same error as `cause` of "fetch failed") read alike:
 * `timeout (CODE)`, else `no answer (CODE)`, or `broken answer (CODE)` when Qwen had answered
 * (`answered`: its body broke, could not be decoded, or passed a size cap). Error messages are not
 * repeated: they can hold the address.
 */
export function unansweredReason(error: unknown, answered = false): string {
  let code: string | undefined
  let timedOut = false
  for (let link = error, depth = 0; typeof link === 'object' && link !== null && depth < 5; depth++) {
    const { code: own, name } = link as { code?: unknown; name?: unknown }
    if (typeof own === 'string') code ??= own
    if (name === 'TimeoutError' || (typeof own === 'string' && TIMEOUT_CODES.has(own))) timedOut = true
    link = (link as { cause?: unknown }).cause
  }
  const label = code === undefined ? '' : ` (${code.slice(0, 40)})`
  return `${timedOut ? 'timeout' : answered ? 'broken answer' : 'no answer'}${label}`
}

const nodeFetch = globalThis.fetch

/**
 * The transport for `upstream.fetch`: that fetch when given, else undici's request while
 * `globalThis.fetch` is still Node's own (else the replacement, looked up at each call).
 */
export function upstreamPost(customFetch: typeof fetch | undefined): UpstreamPost {
  if (customFetch) return viaFetch(customFetch)
  return (url, init) => (globalThis.fetch === nodeFetch ? viaUndici(url, init) : viaFetch(globalThis.fetch)(url, init))
}

/**
 * undici's own header and body timeouts (300 s by default) are off: the attempt's deadline
 * (`upstream.timeoutMs`) and a stream's idle limit (`upstream.streamIdleMs`) are the only clocks, so a
 * `timeoutMs` above 300000 is honoured. No `accept-encoding` is sent; a body Qwen compresses anyway is
 * decoded (gzip, deflate, br), as fetch would.
 */
async function viaUndici(url: string, init: UpstreamPostInit): Promise<UpstreamResponse> {
  const answer = await request(url, {
    method: 'POST',
    headers: init.headers,
    body: init.body,
    signal: init.signal as AbortSignal, // undici reads any EventTarget's 'abort' alike
    dispatcher: dispatcher(),
    headersTimeout: 0,
    bodyTimeout: 0,
  })
  const headers = flatHeaders(answer.headers)
  const body = decoded(answer.body, headers['content-encoding'])
  return {
    status: answer.statusCode,
    headers,
    text: () => answerText(body),
    body: () => body,
  }
}

/**
 * The body with its content codings undone, last applied first (RFC 9110, 8.4). A coding the guard
 * cannot undo makes reading the body fail (a broken answer), never hands the app compressed bytes.
 * Decoders flush what they have as it comes, so a compressed stream's events are not held back.
 */
function decoded(body: Readable, encoding: string | undefined): Readable {
  if (encoding === undefined) return body
  const codings = encoding
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity')
  // As Node's fetch: more codings than that is no real answer, and each would cost a decoder.
  if (codings.length > MAX_CODINGS)
    return failed(body, new Error(`Qwen's answer lists ${codings.length} content codings`))
  let stream = body
  for (const coding of codings.reverse()) {
    const decoder = decoderFor(coding)
    stream = decoder
      ? pipeline(stream, decoder, () => undefined) // an error reaches the reader through the last stream
      : failed(stream, new Error(`Qwen's answer uses a content coding the guard cannot read: ${coding.slice(0, 40)}`))
  }
  return stream
}

/** The most content codings one answer may list (Node's fetch refuses more than 5 too). */
const MAX_CODINGS = 5

const { Z_SYNC_FLUSH, BROTLI_OPERATION_FLUSH } = zlib.constants

function decoderFor(coding: string): zlib.Gunzip | zlib.Unzip | zlib.BrotliDecompress | undefined {
  switch (coding) {
    case 'gzip':
    case 'x-gzip':
      return zlib.createGunzip({ flush: Z_SYNC_FLUSH, finishFlush: Z_SYNC_FLUSH })
    case 'deflate': // zlib-wrapped, as RFC 9110 says; Unzip also reads a gzip body sent under this name
      return zlib.createUnzip({ flush: Z_SYNC_FLUSH, finishFlush: Z_SYNC_FLUSH })
    case 'br':
      return zlib.createBrotliDecompress({ flush: BROTLI_OPERATION_FLUSH, finishFlush: BROTLI_OPERATION_FLUSH })
    default:
      return undefined
  }
}

/**
 * A body nobody can read: the connection is closed now, and `error` is thrown to whoever reads it,
 * whenever that is (destroying the body with the error would emit it at once, unhandled when the
 * body is read later or never: a crash of the app).
 */
function failed(body: Readable, error: Error): Readable {
  discard(body)
  return new Readable({
    read() {
      this.destroy(error) // only once someone reads: the reader's own listener gets the error
    },
  })
}

/**
 * The global dispatcher (the app's, when it set one: a proxy, its own pool), with response header
 * names that would shadow an object's own members (`constructor`, `__proto__`, `toString`) dropped
 * before undici reads them: undici 6 builds the header object from a plain `{}` and throws on them,
 * which would lose an answer Qwen already gave. Built again only when the global dispatcher changes.
 */
function dispatcher(): Dispatcher {
  const base = getGlobalDispatcher()
  if (composed?.base !== base) composed = { base, dispatcher: base.compose(dropShadowingHeaders) }
  return composed.dispatcher
}

let composed: { base: Dispatcher; dispatcher: Dispatcher } | undefined

const dropShadowingHeaders: Dispatcher.DispatchInterceptor = (dispatch) => (options, handler) =>
  dispatch(options, new PlainHeaders(handler))

class PlainHeaders extends DecoratorHandler {
  readonly #handler: Dispatcher.DispatchHandlers

  constructor(handler: Dispatcher.DispatchHandlers) {
    super(handler) // passes every other event on as it came
    this.#handler = handler
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    return this.#handler.onHeaders?.(status, plain(raw), resume, statusText) ?? true
  }

  onComplete(trailers: string[] | null): void {
    this.#handler.onComplete?.(trailers === null ? null : plain(trailers))
  }
}

/**
 * Raw name/value pairs without those whose name, lower-cased as undici reads it, an object already
 * has (`constructor`, `__proto__`). Only a name as long as one of those is decoded and looked up: the
 * rest (nearly every header) cannot shadow anything. Lengths are in bytes, which for these ASCII
 * names is also letters (no other letter lower-cases to one of theirs).
 */
function plain<T extends Buffer | string>(raw: T[]): T[] {
  let kept: T[] | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const shadows = SHADOWING_LENGTHS.has(name.length) && String(name).toLowerCase() in Object.prototype
    if (shadows && kept === undefined) kept = raw.slice(0, i)
    else if (!shadows && kept !== undefined) kept.push(name, raw[i + 1] as T)
  }
  return kept ?? raw
}

/**
 * The lengths of Object.prototype's lower-case member names (9 and 11 on Node 20), read once: a member
 * an app adds to Object.prototype later (prototype pollution) is not looked for.
 */
const SHADOWING_LENGTHS = new Set(
  Object.getOwnPropertyNames(Object.prototype)
    .filter((name) => name === name.toLowerCase())
    .map((name) => name.length),
)

function viaFetch(fetchFn: typeof fetch): UpstreamPost {
  return async (url, init) => {
    // redirect 'manual': a 3xx comes back as it is, as on undici's path (a prompt is never re-sent elsewhere).
    const request = {
      method: 'POST',
      headers: init.headers,
      body: init.body,
      signal: abortSignalOf(init.signal),
      redirect: 'manual' as const,
    }
    // An app's fetch that ignores its signal must not outlast the attempt's deadline (app-hook.ts).
    const response = await withinDeadline(fetchFn(url, request), 'upstream.fetch', undefined, request.signal)
    return {
      status: response.status,
      headers: response.headers,
      text: () => answerText(response.body ?? emptyBody()),
      body: () => response.body ?? emptyBody(),
    }
  }
}

async function* emptyBody(): AsyncGenerator<Uint8Array> {}

/** `signal` as an AbortSignal (a fetch takes nothing else): itself, or one that aborts with it. */
function abortSignalOf(signal: AttemptSignal): AbortSignal {
  if (signal instanceof AbortSignal) return signal
  const controller = new AbortController()
  if (signal.aborted) controller.abort(signal.reason)
  else signal.addEventListener('abort', () => controller.abort(signal.reason), { once: true })
  return controller.signal
}

/**
 * The most of an answer's body read as text, in bytes after decoding: 32 MiB. Qwen's largest answers
 * (a 64k-token output, with logprobs) are a few MiB; a compressed body can decode to far more.
 */
export const MAX_ANSWER_BYTES = 32 * 1024 * 1024

/** The body as UTF-8 text; rejects past `MAX_ANSWER_BYTES` (and stops reading: the connection closes). */
function answerText(body: ByteStream): Promise<string> {
  return readText(
    body as AsyncIterable<Uint8Array>,
    MAX_ANSWER_BYTES,
    () => new Error(`Qwen's answer is larger than ${MAX_ANSWER_BYTES} bytes`),
  )
}

/** A header sent more than once reads as its values joined by ', ' (as `Headers.get` does). */
function flatHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const flat: Record<string, string | undefined> = {}
  for (const name in headers) {
    const value = headers[name]
    flat[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return flat
}
