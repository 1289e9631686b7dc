/**
 * The OpenAI-compatible relay, framework-free: both adapters translate their request into a
 * `RelayRequest` and write the `RelayResponse` back. Everything a client can get wrong is answered
 * here, before the guard counts or sends anything; everything the guard refuses is translated here,
 * so no upstream answer ever reaches the client raw.
 */
import { isUtf8 } from 'node:buffer'
import { defaultIdentify } from './client-address.js'
import { invalidRequest, isQwenGuardError, requestTooLarge, type QwenGuardError } from './errors.js'
import { identityOrDefault } from './identity.js'
import { unawaited, withinDeadline } from './app-hook.js'
import { QwenGuardConfigError } from './options.js'
import { safeErrorLine } from './safe-error-line.js'
import { guardInternalsOf } from './guard-internals.js'
import type { Guard } from './guard-types.js'
import { internalErrorAnswer } from './http-answer.js'
import { markRefusal } from './decision-header.js'
import type { HttpAnswer, IdentityInput } from './types.js'
import { readText } from './read-text.js'
import { isParsedBody } from './relay-body.js'
import { validateChatRequest } from './validate.js'

/**
 * A request body as the framework has it: raw bytes, text, an already parsed object (or the bare
 * number or boolean a non-strict JSON parser makes), or a stream.
 */
export type RelayBody =
  | Uint8Array
  | string
  | Record<string, unknown>
  | number
  | boolean
  | AsyncIterable<Uint8Array | string>
  | null
  | undefined

export interface RelayRequest {
  /** HTTP method, any case. */
  method: string
  /** Path after the mount prefix, query string allowed: `/chat/completions`, `/models`. */
  path: string
  /**
   * Where the relay is mounted (`/v1`), only to name whole URLs in a 404 or 405 message. Default: ''.
   */
  mountPath?: string
  /** Request headers (Node's lower-cased `IncomingHttpHeaders` fit). */
  headers: Record<string, string | string[] | undefined>
  /**
   * The body: pass the Node request itself (read here, with the size limit, as UTF-8 only) or what a
   * body parser already made of it. A Node stream whose data something else already took is not the
   * body: it is answered with the generic 500 and told to `onError`.
   */
  body?: RelayBody
  /**
   * Whose quota the call is charged to, or a function that finds it (an adapter's `identify`), called
   * only for a chat completion whose body passed validation. A missing, null, empty or blank `user`
   * is charged to the client address (`remoteAddress`), never to nobody; a non-string part is a
   * TypeError, and a function that throws or rejects ends the call: each answered with a generic 500
   * and told to `onError` (a QwenGuardError with its own answer). An async one is waited for at most
   * the guard's `upstream.timeoutMs` (then the same 500) and no longer than `signal`.
   */
  identity: IdentityInput | (() => IdentityInput | Promise<IdentityInput>)
  /**
   * The socket's remote address (`req.socket.remoteAddress`), the user when `identity` names none
   * (IPv6 grouped by /64). Without it such calls share one 'unknown' user.
   */
  remoteAddress?: string
  /**
   * Aborted when the client goes away (`CallOptions.clientGone`): the guard stops queueing or
   * streaming and settles at once, whether or not the answer's body was read; a JSON call already
   * sent runs to its answer and is settled from Qwen's usage.
   */
  signal?: AbortSignal
}

export interface RelayResponse {
  status: number
  headers: Record<string, string>
  /** JSON text, or an SSE stream to pass on chunk by chunk. */
  body: string | ReadableStream<Uint8Array>
}

export interface RelayOptions {
  /** Largest request body accepted, in bytes; a larger one is answered 413. Default: 1,048,576 (1 MiB). */
  maxBodyBytes?: number
  /**
   * Told about an error that is not a QwenGuardError (a bug, an unexpected failure): the client only
   * gets a generic 500, so this is where it can be seen. Default: one `console.error` line from
   * `safeErrorLine` (no stack, keys masked). One that throws or rejects changes no answer: what it
   * threw is reported by that default line.
   */
  onError?: (error: unknown) => void
}

/** A relay made by `createRelay`: one call per HTTP request. */
export type Relay = (request: RelayRequest) => Promise<RelayResponse>

const DEFAULT_MAX_BODY_BYTES = 1_048_576

/** Keys of `RelayOptions`; the Node relay and the adapters' `proxy()` add `prefix` (and `identify`). */
const RELAY_KEYS = ['maxBodyBytes', 'onError'] as const

/**
 * Checks a relay's options at setup and returns its `RelayOptions` part: an object of known keys (a
 * misspelled `prefx` would otherwise leave the relay at '/v1' in silence), `maxBodyBytes` a positive
 * integer (bytes), `onError` and `identify` functions, `prefix` a string.
 *
 * @param where the function the app called, named in errors (`'proxy'`, `'createNodeRelay'`)
 * @param extra keys that function takes beyond RelayOptions
 * @throws QwenGuardConfigError with path `${where}.${key}`
 */
export function checkRelayOptions(
  options: unknown,
  where: string,
  extra: ReadonlyArray<'prefix' | 'identify'> = [],
): RelayOptions {
  if (options === undefined) return {}
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new QwenGuardConfigError(
      where,
      `options must be an object, got ${options === null ? 'null' : typeof options}`,
    )
  const given = options as Record<string, unknown>
  const allowed: readonly string[] = [...RELAY_KEYS, ...extra]
  for (const key of Object.keys(given)) {
    if (!allowed.includes(key))
      throw new QwenGuardConfigError(`${where}.${key}`, `unknown option (expected one of: ${allowed.join(', ')})`)
  }
  const { maxBodyBytes, onError, prefix, identify } = given
  if (maxBodyBytes !== undefined && !(Number.isInteger(maxBodyBytes) && (maxBodyBytes as number) >= 1))
    throw new QwenGuardConfigError(
      `${where}.maxBodyBytes`,
      `must be a positive integer (bytes), got ${String(maxBodyBytes)}`,
    )
  for (const [key, value] of [
    ['onError', onError],
    ['identify', identify],
  ] as const) {
    if (value !== undefined && typeof value !== 'function')
      throw new QwenGuardConfigError(`${where}.${key}`, `must be a function, got ${typeof value}`)
  }
  if (prefix !== undefined && typeof prefix !== 'string')
    throw new QwenGuardConfigError(`${where}.prefix`, `must be a string like '/v1', got ${typeof prefix}`)
  const relayOptions: RelayOptions = {}
  if (maxBodyBytes !== undefined) relayOptions.maxBodyBytes = maxBodyBytes as number
  if (onError !== undefined) relayOptions.onError = onError as RelayOptions['onError']
  return relayOptions
}

/**
 * A framework-free handler for `POST /chat/completions` (JSON or SSE) and `GET /models`; anything
 * else answers an OpenAI-shaped 404 (or 405 for a known path with the wrong method).
 *
 * @example
 * const relay = createRelay(guard, { maxBodyBytes: 256 * 1024 })
 * const answer = await relay({ method: 'POST', path: '/chat/completions', headers: req.headers, body: req, identity, signal })
 * // write answer.status, answer.headers, then answer.body (a string, or a stream to pipe)
 * @throws QwenGuardConfigError for unknown or bad options (path `createRelay.<key>`)
 */
export function createRelay(guard: Guard, options: RelayOptions = {}): Relay {
  const internals = guardInternalsOf(guard)
  const guardOptions = internals.options
  const checked = checkRelayOptions(options, 'createRelay')
  const maxBodyBytes = checked.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const keys = guardOptions.accounts.flatMap((account) => account.apiKeys)
  /** RelayOptions.onError's default: one line, no stack, keys masked (the guard's own of any shape too). */
  const reportUnexpected = (error: unknown): void => {
    console.error(`[qwen-guard] relay: unexpected error ${safeErrorLine(error, keys)}`)
  }
  const appOnError = checked.onError
  /** The app's `onError`, which must not fail the answer: its throw or rejection is reported by the default line instead. */
  const onError = appOnError
    ? (error: unknown) => {
        try {
          unawaited(appOnError(error), reportUnexpected)
        } catch (thrown) {
          reportUnexpected(thrown)
        }
      }
    : reportUnexpected

  async function chatCompletions(request: RelayRequest): Promise<RelayResponse> {
    const raw = await readBody(request, maxBodyBytes)
    const body = validateChatRequest(raw, guardOptions, { maxBodyBytes })
    const { signal } = request
    // An app's identity lookup is bounded like the call's other waits (app-hook.ts).
    const given =
      typeof request.identity === 'function'
        ? await withinDeadline(request.identity(), 'identify()', guardOptions.upstream.timeoutMs, signal)
        : request.identity
    const identity = identityOrDefault(given, () => defaultIdentify(request.remoteAddress), 'relay request')
    // The client going away ends queueing and streams; a JSON call already sent runs to its usage.
    // `guard.call` without its Response: the answer's headers are every header it should have (built
    // once, in call.ts), and its stream already ends with [DONE] or an error event: both are passed
    // on as they are.
    const { headers, body: answer } = await internals.answer(identity, body, signal ? { clientGone: signal } : {})
    return { status: 200, headers, body: answer.kind === 'sse' ? answer.stream : answer.text }
  }

  return async function relay(request: RelayRequest): Promise<RelayResponse> {
    const path = routePath(request.path)
    const mount = request.mountPath ?? ''
    const method = request.method.toUpperCase()
    try {
      if (path === '/chat/completions') {
        if (method !== 'POST') return methodNotAllowed(method, mount + path, 'POST')
        return await chatCompletions(request)
      }
      if (path === '/models') {
        if (method !== 'GET' && method !== 'HEAD') return methodNotAllowed(method, mount + path, 'GET, HEAD')
        return jsonAnswer(200, {}, { object: 'list', data: guard.models() })
      }
      return notFound(method, mount, path)
    } catch (error) {
      // A client that left (while queued, or before the first token) is no error worth reporting, and
      // its answer goes to nobody: 499, so a log or a 5xx metric before the relay counts no failure.
      if (!isQwenGuardError(error) && request.signal?.aborted) return clientClosedRequest()
      if (!isQwenGuardError(error)) onError(error)
      // A request refused before it became a call (validation) gets its decision header here.
      else if (guardOptions.headers.decision) markRefusal(error)
      return errorResponse(error)
    }
  }
}

/** The routed part of a path: no query string, no trailing slash. */
function routePath(path: string): string {
  const bare = path.split('?', 1)[0] ?? ''
  const trimmed = bare.length > 1 ? bare.replace(/\/+$/, '') : bare
  return trimmed.startsWith('/') ? trimmed : `/${trimmed}`
}

/**
 * The HTTP answer for any error: a QwenGuardError's own answer, otherwise a generic 500 that says
 * nothing about the error (its message could name an account or a key).
 */
function errorAnswer(error: unknown): HttpAnswer {
  if (isQwenGuardError(error)) return error.toHttp()
  const answer = internalErrorAnswer()
  if (error instanceof BodyReadBeforeError) answer.headers['x-should-retry'] = 'false'
  return answer
}

/** The relay's answer for any error (a QwenGuardError's own, else a generic 500). */
function errorResponse(error: unknown): RelayResponse {
  const answer = errorAnswer(error)
  return jsonAnswer(answer.status, answer.headers, answer.body)
}

function jsonAnswer(status: number, headers: Record<string, string>, body: unknown): RelayResponse {
  return {
    status,
    headers: { ...headers, 'content-type': 'application/json; charset=utf-8' },
    body: JSON.stringify(body),
  }
}

function clientError(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): RelayResponse {
  // Asking again cannot help (the path or the method is wrong): x-should-retry as on every
  // non-retryable refusal (docs/errors.md).
  return jsonAnswer(
    status,
    { ...headers, 'x-should-retry': 'false' },
    { error: { message, type: 'invalid_request_error', code, param: null } },
  )
}

function notFound(method: string, mount: string, path: string): RelayResponse {
  // The mount itself (`GET /v1`) arrives as path '/': name it as the client wrote it.
  const url = mount && path === '/' ? mount : mount + path
  return clientError(
    404,
    'not_found',
    `Unknown request URL: ${method} ${url}. This relay serves POST ${mount}/chat/completions and GET ${mount}/models.`,
  )
}

/**
 * The answer to a request whose client went away before it was answered: status 499 ("client closed
 * request", as nginx logs it; no HTTP status says so), written to nobody.
 */
function clientClosedRequest(): RelayResponse {
  return clientError(499, 'client_closed_request', 'The client closed the connection before the answer.')
}

function methodNotAllowed(method: string, path: string, allow: string): RelayResponse {
  return clientError(405, 'method_not_allowed', `${method} is not allowed on ${path}; use ${allow}.`, { allow })
}

function invalid(code: 'invalid_request' | 'request_too_large', message: string): QwenGuardError {
  return code === 'request_too_large' ? requestTooLarge(message) : invalidRequest(message)
}

function headerValue(headers: RelayRequest['headers'], name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/** JSON media types: application/json and application/*+json. A missing type is read as JSON. */
function isJsonContentType(value: string | undefined): boolean {
  if (!value) return true
  const type = value.split(';', 1)[0]?.trim().toLowerCase() ?? ''
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))
}

/**
 * The body as JSON text (or the object a parser already made), read only up to the size limit;
 * parsing and every content check are validateChatRequest's.
 */
async function readBody(request: RelayRequest, maxBodyBytes: number): Promise<unknown> {
  const { body, headers } = request
  const contentType = headerValue(headers, 'content-type')
  if (!isJsonContentType(contentType)) {
    throw invalid('invalid_request', 'Request body must be JSON (Content-Type: application/json).')
  }
  const declared = Number(headerValue(headers, 'content-length'))
  if (Number.isFinite(declared) && declared > maxBodyBytes) throw tooLarge(maxBodyBytes)
  if (body === undefined || body === null) return ''
  // What a JSON parser made of the body (an object, an array, or a bare number or boolean from a
  // parser that is not strict): validation answers anything but an object with its 400.
  if (isParsedBody(body) || typeof body === 'number' || typeof body === 'boolean') return body
  if (alreadyRead(body)) throw bodyReadBefore()
  // Text a parser already decoded is used as it is; bytes are read here, as UTF-8 only.
  if (typeof body !== 'string') checkBytesReadable(contentType, body instanceof Uint8Array ? undefined : headers)
  return withoutBom(await bodyText(body, maxBodyBytes))
}

/**
 * Raw bytes are read as UTF-8 JSON (RFC 8259: JSON between systems is UTF-8), so a body in another
 * charset is refused rather than decoded wrong and sent to Qwen garbled (a Latin-1 "café" would
 * reach it as "caf\uFFFD"); so is a compressed stream (`headers` given for the Node request: a
 * parser that read it, express.json() or a Koa body parser, inflates it first), which would otherwise
 * be answered as invalid JSON.
 */
function checkBytesReadable(contentType: string | undefined, headers?: RelayRequest['headers']): void {
  // Every charset parameter: `charset=utf-8; charset=latin1` is Latin-1 to body-parser's reading
  // (its last), and a Latin-1 body read by the first reached Qwen garbled.
  const charset = charsetsOf(contentType).find((label) => !UTF8_LABELS.has(label))
  if (charset !== undefined) {
    throw invalid(
      'invalid_request',
      `Request body must be UTF-8 JSON; charset ${JSON.stringify(charset.slice(0, 40))} is not supported.`,
    )
  }
  const encoding = headers && headerValue(headers, 'content-encoding')?.trim().toLowerCase()
  // A list of codings (Node joins a repeated header with ", "): only `identity` and empty elements,
  // which RFC 9110 5.6.1 says to ignore, leave the bytes as they are.
  if (encoding && encoding.split(',').some((coding) => !['', 'identity'].includes(coding.trim()))) {
    throw invalid(
      'invalid_request',
      `Content-Encoding ${JSON.stringify(encoding.slice(0, 40))} is not supported: send the request body uncompressed.`,
    )
  }
}

/** Charset labels read as UTF-8 (US-ASCII is a subset of it). */
const UTF8_LABELS = new Set(['utf-8', 'utf8', 'us-ascii'])

/** Every `charset` parameter of a media type, lower-cased and unquoted, in order (none: []). */
function charsetsOf(contentType: string | undefined): string[] {
  if (!contentType) return []
  const charsets: string[] = []
  for (const parameter of contentType.split(';').slice(1)) {
    const at = parameter.indexOf('=')
    if (at < 0 || parameter.slice(0, at).trim().toLowerCase() !== 'charset') continue
    charsets.push(
      parameter
        .slice(at + 1)
        .trim()
        .replace(/^"(.*)"$/, '$1')
        .toLowerCase(),
    )
  }
  return charsets
}

/**
 * A Node request (or any Node stream) whose data an earlier middleware already took, leaving no
 * parsed body or raw bytes for the relay (relayBodyOf): what is left of it is not the client's body,
 * so reading it would answer a valid request 400 "not valid JSON". An empty body never counts (no data
 * was ever handed out), nor does a stream only paused or listened to.
 */
function alreadyRead(body: RelayBody): boolean {
  return typeof body === 'object' && body !== null && (body as { readableDidRead?: unknown }).readableDidRead === true
}

/**
 * The app's mistake, not the client's: a generic 500 (internal_error) for the client, this message for
 * `onError`.
 */
function bodyReadBefore(): Error {
  return new BodyReadBeforeError(
    'the request body was read by a middleware before the relay, which left no parsed body (req.body, ctx.request.body) or raw body (req.rawBody, ctx.request.rawBody) for it: mount the relay before that middleware, or let it leave what it read',
  )
}

/**
 * bodyReadBefore's error: the app's mount order, the same on every attempt, so its 500 carries
 * `x-should-retry: false` (the SDKs retried it twice, and `onError` heard it three times).
 */
class BodyReadBeforeError extends Error {}

/** A leading UTF-8 byte order mark is dropped (RFC 8259 lets a parser ignore it; JSON.parse does not). */
function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
}

function tooLarge(maxBodyBytes: number): QwenGuardError {
  return invalid('request_too_large', `Request body is larger than ${maxBodyBytes} bytes.`)
}

/** The body as text, reading a stream only up to the limit (a huge upload is not buffered). */
async function bodyText(
  body: Exclude<RelayBody, null | undefined | Record<string, unknown> | number | boolean>,
  maxBodyBytes: number,
): Promise<string> {
  if (typeof body === 'string') {
    if (Buffer.byteLength(body) > maxBodyBytes) throw tooLarge(maxBodyBytes)
    return body
  }
  if (body instanceof Uint8Array) {
    if (body.byteLength > maxBodyBytes) throw tooLarge(maxBodyBytes)
    if (!isUtf8(body)) throw notUtf8()
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')
  }
  return readText(body, maxBodyBytes, () => tooLarge(maxBodyBytes), notUtf8)
}

/**
 * Bytes that are not UTF-8 (a Latin-1 body under no charset or `charset=utf-8`: Windows PowerShell 5
 * sends string bodies so) are refused like a declared other charset, not decoded with U+FFFD in
 * their place and sent to Qwen garbled ("café" as "caf\uFFFD").
 */
function notUtf8(): QwenGuardError {
  return invalid('invalid_request', 'Request body is not valid UTF-8: send the JSON encoded as UTF-8 (RFC 8259).')
}
