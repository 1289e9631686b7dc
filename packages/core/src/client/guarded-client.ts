/**
 * `guard.client(identity)`: a real `openai` client (the app's own copy, a peer dependency) whose fetch
 * is the guard. The SDK wraps anything a fetch throws into `APIConnectionError`, so a refusal travels
 * as a synthetic error response instead, and `makeStatusError` (the SDK's protected hook for turning
 * an error response into an error, meant for subclasses) hands the SDK the original `QwenGuardError`.
 * The one other override skips building request headers that never leave the process (below).
 *
 * The class is the named export `OpenAI`, never the default: under `require`, the SDK's module is a
 * factory function whose `default` is the class, and a bundler's CommonJS interop hands the factory
 * to `extends`, which then builds plain `OpenAI` objects (the guard's refusals became `RateLimitError`).
 */
import { OpenAI, type APIError } from 'openai'
import { invalidRequest, isQwenGuardError, unknownRoute, type QwenGuardError } from '../errors.js'
import type { InternalCallOptions } from '../call.js'
import type { GuardedResponse, ModelEntry } from '../guard-types.js'
import type { Identity } from '../types.js'
import { validateChatRequest } from '../validate.js'
import { isCallId, MAX_CALL_ID_LENGTH } from '../call-id.js'
import { markRefusal } from '../decision-header.js'
import type { ResolvedOptions } from '../types.js'

export interface ClientDeps {
  options: ResolvedOptions
  call(identity: Identity, body: Record<string, unknown>, options: InternalCallOptions): Promise<GuardedResponse>
  models(): ModelEntry[]
}

/** Refusals waiting for the SDK to ask for them, keyed by the synthetic response's headers. */
const pendingErrors = new WeakMap<Headers, QwenGuardError>()

class GuardedOpenAI extends OpenAI {
  protected override makeStatusError(
    status: number,
    error: object,
    message: string | undefined,
    headers: Headers,
  ): APIError {
    const guardError = pendingErrors.get(headers)
    if (guardError) return guardError
    return super.makeStatusError(status, error, message, headers)
  }
}

/**
 * The SDK's request headers (user agent, platform telemetry, retry count, idempotency key, the
 * placeholder key) go nowhere: the guarded fetch sends Qwen headers of its own and reads only the
 * call-id header a caller may set (`create(body, { headers })`). Building them is about a third of
 * the SDK's own work per call (bench/RESULTS.md, `pnpm bench client`), so a request that sets no
 * headers gets an empty `Headers`; one that does gets the SDK's full set, as a plain client would.
 * `buildHeaders` is private in the SDK's types, hence the prototype assignment, made only when the
 * SDK has the method; the pinned SDK version is checked by test/client/guarded-client.test.ts.
 */
type BuildHeaders = (this: OpenAI, request: { options: { headers?: unknown } }) => Promise<unknown>
const sdkBuildHeaders = (OpenAI.prototype as unknown as { buildHeaders?: BuildHeaders }).buildHeaders
if (typeof sdkBuildHeaders === 'function') {
  Object.defineProperty(GuardedOpenAI.prototype, 'buildHeaders', {
    value: function buildHeadersWhenAsked(this: OpenAI, request: { options: { headers?: unknown } }) {
      if (request.options.headers === undefined || request.options.headers === null)
        return Promise.resolve(new Headers())
      return sdkBuildHeaders.call(this, request)
    },
    writable: true,
    configurable: true,
  })
}

/** `clientGone`: followed by every call (CallOptions.clientGone). */
export function createGuardedClient(deps: ClientDeps, identity: Identity, clientGone?: AbortSignal): OpenAI {
  return new GuardedOpenAI({
    apiKey: 'qwen-guard', // the real keys never leave the guard
    baseURL: deps.options.baseURL,
    maxRetries: 0, // the guard retries upstream refusals itself, against the right account
    fetch: createGuardedFetch(deps, identity, clientGone),
  })
}

/** The fetch behind the client: chat completions guarded, the model list answered locally. */
export function createGuardedFetch(deps: ClientDeps, identity: Identity, clientGone?: AbortSignal): typeof fetch {
  return async function guardedFetch(input, init) {
    const path = pathnameOf(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase()
    try {
      if (method === 'GET' && path.endsWith('/models')) {
        return Response.json({ object: 'list', data: deps.models() })
      }
      if (method !== 'POST' || !path.endsWith('/chat/completions')) {
        throw unknownRoute(`qwen-guard serves POST /chat/completions and GET /models, not ${method} ${path}.`)
      }
      const text = typeof init?.body === 'string' ? init.body : await new Response(init?.body ?? null).text()
      const body = validateChatRequest(text, deps.options) as unknown as Record<string, unknown>
      const signal = init?.signal ?? undefined
      const options: InternalCallOptions = signal ? { text, signal } : { text }
      if (clientGone) options.clientGone = clientGone
      const callId = requestCallId(init?.headers)
      if (callId !== undefined) {
        if (!isCallId(callId))
          throw invalidRequest(
            `The ${CALL_ID_HEADER} request header must be 1 to ${MAX_CALL_ID_LENGTH} visible ASCII characters without '"' or '\\'.`,
          )
        options.callId = callId
      }
      const { response } = await deps.call(identity, body, options)
      return response
    } catch (error) {
      if (!isQwenGuardError(error)) throw error
      if (deps.options.headers.decision) markRefusal(error) // refused before it became a call: no id
      return errorResponse(error)
    }
  } as typeof fetch
}

/** The request header that sets a call's id through the SDK (`create(body, { headers })`). */
export const CALL_ID_HEADER = 'x-qwen-guard-call-id'

/** The call id a request asks for, from the headers the SDK hands its fetch (a `Headers`) or a plain record. */
function requestCallId(headers: RequestInit['headers']): string | undefined {
  if (!headers) return undefined
  if (headers instanceof Headers) return headers.get(CALL_ID_HEADER) ?? undefined
  if (Array.isArray(headers)) return headers.find(([name]) => name.toLowerCase() === CALL_ID_HEADER)?.[1]
  const record = headers as Record<string, string | undefined>
  for (const name in record) if (name.toLowerCase() === CALL_ID_HEADER) return record[name]
  return undefined
}

/** The path of a URL (absolute, or relative to the SDK's base), without query or fragment. */
export function pathnameOf(href: string): string {
  return new URL(href, 'http://localhost').pathname
}

function errorResponse(error: QwenGuardError): Response {
  const answer = error.toHttp()
  const response = new Response(JSON.stringify(answer.body), {
    status: answer.status,
    headers: { ...answer.headers, 'content-type': 'application/json', 'x-should-retry': 'false' },
  })
  pendingErrors.set(response.headers, error)
  return response
}
