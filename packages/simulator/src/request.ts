import { badRequest, type ErrorAnswer } from './errors.js'

/** A chat request after validation: only what the simulator uses. */
export interface ChatRequest {
  model: string
  messages: { role: string; content?: unknown }[]
  stream: boolean
  includeUsage: boolean
  /** `max_tokens` (or `max_completion_tokens`) when set. */
  maxTokens: number | undefined
  enableThinking: boolean
  thinkingBudget: number | undefined
}

const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer'])

/**
 * Parses and validates a chat body the way DashScope answers bad input: 400 for JSON and parameter
 * errors (type invalid_request_error, code invalid_request_error for unparsable JSON, else
 * invalid_parameter_error with `param`). The model's existence and `max_tokens` range are checked by
 * the caller, which knows the model table.
 */
export function parseChatRequest(text: string): ChatRequest | ErrorAnswer {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return badRequest(400, 'invalid_request_error', 'The request body is not valid JSON.')
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    return badRequest(400, 'invalid_request_error', 'The request body must be a JSON object.')
  }
  const b = body as Record<string, unknown>
  if (typeof b.model !== 'string' || b.model === '') {
    return invalidParam('model', 'Model not specified: `model` is required.')
  }
  const messages = b.messages
  if (!Array.isArray(messages) || messages.length === 0) {
    return invalidParam('messages', '`messages` must be a non-empty array.')
  }
  for (const m of messages) {
    if (!m || typeof m !== 'object' || !ROLES.has((m as { role?: unknown }).role as string)) {
      return invalidParam('messages', 'Each message needs a `role` of system, user, assistant or tool.')
    }
  }
  const maxTokens = b.max_tokens ?? b.max_completion_tokens
  if (maxTokens !== undefined && maxTokens !== null && !Number.isInteger(maxTokens)) {
    return invalidParam('max_tokens', '`max_tokens` must be an integer.')
  }
  const budget = b.thinking_budget
  const streamOptions = b.stream_options as { include_usage?: unknown } | null | undefined
  return {
    model: b.model,
    messages: messages as ChatRequest['messages'],
    stream: b.stream === true,
    includeUsage: b.stream === true && streamOptions?.include_usage === true,
    maxTokens: (maxTokens as number | null | undefined) ?? undefined,
    enableThinking: b.enable_thinking === true,
    thinkingBudget: Number.isInteger(budget) && (budget as number) > 0 ? (budget as number) : undefined,
  }
}

export function invalidParam(param: string, message: string): ErrorAnswer {
  return badRequest(400, 'invalid_parameter_error', message, param)
}

export function modelNotFound(model: string): ErrorAnswer {
  return badRequest(
    404,
    'model_not_found',
    `The model \`${model}\` does not exist or you do not have access to it.`,
    'model',
  )
}

export function maxTokensOutOfRange(max: number): ErrorAnswer {
  return invalidParam('max_tokens', `Range of max_tokens should be [1, ${max}]`)
}

export function bodyTooLarge(limit: number): ErrorAnswer {
  return badRequest(413, 'request_too_large', `Request body too large: the limit is ${limit} bytes.`)
}

export function isErrorAnswer(value: ChatRequest | ErrorAnswer): value is ErrorAnswer {
  return (value as ErrorAnswer).status !== undefined
}
