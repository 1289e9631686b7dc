/**
 * `guard.client(identity)`: a real `openai` client whose fetch is the guard. The SDK wraps anything a
 * fetch throws into `APIConnectionError`, so a refusal travels as a synthetic error response instead
 * and `makeStatusError` hands the SDK the original `QwenGuardError` to throw.
 */
import OpenAI, { type APIError } from 'openai'
import { isQwenGuardError, QwenGuardError } from './errors.js'
import type { GuardedResponse, ModelEntry } from './guard-types.js'
import type { Identity } from './types.js'
import { validateChatRequest } from './validate.js'
import type { ResolvedOptions } from './types.js'

export interface ClientDeps {
  options: ResolvedOptions
  call(identity: Identity, body: Record<string, unknown>, signal: AbortSignal | undefined): Promise<GuardedResponse>
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

export function createGuardedClient(deps: ClientDeps, identity: Identity): OpenAI {
  return new GuardedOpenAI({
    apiKey: 'qwen-guard', // the real keys never leave the guard
    baseURL: deps.options.baseURL,
    maxRetries: 0, // the guard retries upstream refusals itself, against the right account
    fetch: createGuardedFetch(deps, identity),
  })
}

/** The fetch behind the client: chat completions guarded, the model list answered locally. */
export function createGuardedFetch(deps: ClientDeps, identity: Identity): typeof fetch {
  return async function guardedFetch(input, init) {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url)
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase()
    try {
      if (method === 'GET' && url.pathname.endsWith('/models')) {
        return Response.json({ object: 'list', data: deps.models() })
      }
      if (method !== 'POST' || !url.pathname.endsWith('/chat/completions')) {
        throw new QwenGuardError({
          status: 404,
          code: 'invalid_request',
          message: `qwen-guard serves POST /chat/completions and GET /models, not ${method} ${url.pathname}.`,
          scope: 'request',
          retryable: false,
        })
      }
      const text = typeof init?.body === 'string' ? init.body : await new Response(init?.body ?? null).text()
      const body = validateChatRequest(text, deps.options) as unknown as Record<string, unknown>
      const { response } = await deps.call(identity, body, init?.signal ?? undefined)
      return response
    } catch (error) {
      if (!isQwenGuardError(error)) throw error
      return errorResponse(error)
    }
  } as typeof fetch
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
