/**
 * validateChatRequest: checks a chat completion body before anything is counted or sent, so a
 * malformed request costs no quota and never reaches Qwen. Every failure is a QwenGuardError with
 * a stable code and the offending `param` (docs/errors.md lists them).
 */
import { GUARD_ERROR_STATUS, QwenGuardError, type GuardErrorCode } from './errors.js'
import type { ChatMessageLike, ResolvedModel, ResolvedOptions } from './types.js'

/** Largest body accepted, in bytes (1 MiB): ~250k tokens of English, beyond most context windows' useful size. */
export const MAX_BODY_BYTES = 1_048_576

/** Roles of the OpenAI chat API ('function' is the deprecated form of 'tool'). */
export const CHAT_ROLES: ReadonlySet<string> = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function'])

/** A chat message as the guard reads it; other fields pass through untouched. */
export interface ChatMessage extends ChatMessageLike {
  [field: string]: unknown
}

/** The fields of an OpenAI chat completion body the guard uses; the rest pass through to Qwen. */
export interface ChatRequest {
  model: string
  messages: ChatMessage[]
  max_tokens?: number | null
  max_completion_tokens?: number | null
  stream?: boolean | null
  stream_options?: { include_usage?: boolean; [field: string]: unknown } | null
  n?: number | null
  [field: string]: unknown
}

export interface ValidateLimits {
  /** Default: MAX_BODY_BYTES. */
  maxBodyBytes?: number
}

function fail(code: GuardErrorCode, message: string, param: string | null): never {
  throw new QwenGuardError({ status: GUARD_ERROR_STATUS[code], code, message, scope: 'request', param, retryable: false })
}

function invalid(message: string, param: string): never {
  fail('invalid_request', message, param)
}

/** A short, printable echo of a client value for messages. */
function echo(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value)
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text)
}

/** Turns a string, bytes or a parsed value into an object, enforcing the size limit first. */
function parseBody(body: unknown, maxBytes: number): Record<string, unknown> {
  let value = body
  let bytes: number
  // A UTF-16 code unit is at most 3 UTF-8 bytes: a short string needs no exact count.
  if (typeof body === 'string') bytes = body.length * 3 <= maxBytes ? body.length : Buffer.byteLength(body, 'utf8')
  else if (body instanceof Uint8Array) bytes = body.byteLength
  else bytes = body === undefined ? 0 : Buffer.byteLength(JSON.stringify(body) ?? '', 'utf8')
  if (bytes > maxBytes) fail('request_too_large', `The request body is ${bytes} bytes; the limit is ${maxBytes} bytes.`, null)
  if (body instanceof Uint8Array) value = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value)
    } catch {
      fail('invalid_json', 'The request body is not valid JSON.', null)
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('invalid_json', 'The request body must be a JSON object.', null)
  }
  return value as Record<string, unknown>
}

function checkModel(body: Record<string, unknown>, options: ResolvedOptions): ResolvedModel {
  const { model } = body
  if (model === undefined || model === null) invalid('You must provide a model parameter.', 'model')
  if (typeof model !== 'string' || model.trim() === '') invalid(`model must be a non-empty string, got ${echo(model)}.`, 'model')
  const spec = Object.hasOwn(options.models, model) ? options.models[model] : undefined
  if (!spec || !options.allowedModels.has(model)) {
    fail('model_not_found', `The model ${echo(model)} does not exist or you do not have access to it.`, 'model')
  }
  return spec
}

function checkContentPart(part: unknown, param: string): void {
  if (typeof part !== 'object' || part === null || Array.isArray(part)) invalid('A content part must be an object.', param)
  const { type, text } = part as { type?: unknown; text?: unknown }
  if (typeof type !== 'string' || type === '') invalid('A content part must have a string type.', `${param}.type`)
  if (type === 'text' && typeof text !== 'string') invalid('A text content part must have a string text.', `${param}.text`)
}

function checkContent(message: Record<string, unknown>, i: number): void {
  const { content, role } = message
  if (typeof content === 'string') return
  const param = `messages[${i}].content`
  if (content === undefined || content === null) {
    // Only an assistant turn that calls tools may come without content.
    const hasToolCalls = Array.isArray(message.tool_calls) && message.tool_calls.length > 0
    if (role === 'assistant' && (hasToolCalls || message.function_call !== undefined)) return
    invalid(`A ${String(role)} message must have content.`, param)
  }
  if (!Array.isArray(content)) invalid(`content must be a string or an array of content parts, got ${typeof content}.`, param)
  content.forEach((part, j) => checkContentPart(part, `${param}[${j}]`))
}

/** Checks one message; its `messages[i]` param is only spelled out for an error. */
function checkMessage(value: unknown, i: number): void {
  const at = (field?: string) => `messages[${i}]${field ? `.${field}` : ''}`
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid('Each message must be an object.', at())
  const message = value as Record<string, unknown>
  if (typeof message.role !== 'string' || !CHAT_ROLES.has(message.role)) {
    invalid(`Invalid role ${echo(message.role)}; expected one of ${[...CHAT_ROLES].join(', ')}.`, at('role'))
  }
  checkContent(message, i)
  if (message.name !== undefined && typeof message.name !== 'string') invalid('name must be a string.', at('name'))
  if (message.tool_calls !== undefined && !Array.isArray(message.tool_calls)) invalid('tool_calls must be an array.', at('tool_calls'))
  if (message.role === 'tool' && typeof message.tool_call_id !== 'string') {
    invalid('A tool message must have a string tool_call_id.', at('tool_call_id'))
  }
}

function checkMessages(body: Record<string, unknown>): void {
  const { messages } = body
  if (messages === undefined || messages === null) invalid('You must provide messages.', 'messages')
  if (!Array.isArray(messages)) invalid('messages must be an array.', 'messages')
  if (messages.length === 0) invalid('messages must not be empty.', 'messages')
  for (let i = 0; i < messages.length; i++) checkMessage(messages[i], i)
}

function checkMaxTokens(body: Record<string, unknown>, model: ResolvedModel): void {
  for (const field of ['max_tokens', 'max_completion_tokens'] as const) {
    const value = body[field]
    if (value === undefined || value === null) continue
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
      invalid(`${field} must be a positive integer, got ${echo(value)}.`, field)
    }
    if (value > model.maxOutputTokens) {
      invalid(`${field} is too large: ${value}. The model ${model.name} accepts at most ${model.maxOutputTokens}.`, field)
    }
  }
}

function checkRange(body: Record<string, unknown>, field: string, min: number, max: number, minOpen = false): void {
  const value = body[field]
  if (value === undefined || value === null) return
  const below = minOpen ? (value as number) <= min : (value as number) < min
  if (typeof value !== 'number' || !Number.isFinite(value) || below || value > max) {
    invalid(`${field} must be a number in ${minOpen ? '(' : '['}${min}, ${max}], got ${echo(value)}.`, field)
  }
}

function checkStreaming(body: Record<string, unknown>): void {
  const { stream, stream_options: options } = body
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') invalid(`stream must be a boolean, got ${echo(stream)}.`, 'stream')
  if (options === undefined || options === null) return
  if (stream !== true) invalid('The stream_options parameter is only allowed when stream is enabled.', 'stream_options')
  if (typeof options !== 'object' || Array.isArray(options)) invalid('stream_options must be an object.', 'stream_options')
  const includeUsage = (options as { include_usage?: unknown }).include_usage
  if (includeUsage !== undefined && typeof includeUsage !== 'boolean') {
    invalid('stream_options.include_usage must be a boolean.', 'stream_options.include_usage')
  }
}

function checkOthers(body: Record<string, unknown>): void {
  // n > 1 multiplies the completion tokens by n; the reservation would have to as well, and few
  // Qwen models accept it. Refusing keeps accounting exact.
  const { n, tools } = body
  if (n !== undefined && n !== null && n !== 1) invalid(`n must be 1; several choices per request are not supported, got ${echo(n)}.`, 'n')
  checkRange(body, 'temperature', 0, 2)
  checkRange(body, 'top_p', 0, 1, true)
  checkRange(body, 'presence_penalty', -2, 2)
  checkRange(body, 'frequency_penalty', -2, 2)
  if (tools !== undefined && tools !== null && !Array.isArray(tools)) invalid('tools must be an array.', 'tools')
}

/**
 * Checks a chat completion body: a JSON string, bytes, or an already parsed value. Returns it
 * typed (the caller's object, not a copy); throws QwenGuardError (400/404/413, not retryable).
 * Checks, in order: size, JSON, model, messages, max_tokens, streaming flags, sampling ranges.
 */
export function validateChatRequest(body: unknown, options: ResolvedOptions, limits: ValidateLimits = {}): ChatRequest {
  const parsed = parseBody(body, limits.maxBodyBytes ?? MAX_BODY_BYTES)
  const model = checkModel(parsed, options)
  checkMessages(parsed)
  checkMaxTokens(parsed, model)
  checkStreaming(parsed)
  checkOthers(parsed)
  return parsed as ChatRequest
}

/** The completion cap a request asks for, if any (max_tokens wins over max_completion_tokens). */
export function requestedMaxTokens(request: ChatRequest): number | undefined {
  return request.max_tokens ?? request.max_completion_tokens ?? undefined
}

/**
 * Refuses a request whose prompt plus completion cap can never fit the model's context window
 * (needs the estimate, so the caller runs it after estimating). Not retryable.
 */
export function assertFitsContext(model: ResolvedModel, promptTokens: number, maxTokens: number): void {
  if (promptTokens + maxTokens <= model.contextWindow) return
  fail(
    'context_length_exceeded',
    `This model's maximum context length is ${model.contextWindow} tokens; the request needs about ${promptTokens} for its messages plus ${maxTokens} for the completion.`,
    'messages',
  )
}
