/**
 * validateChatRequest: checks a chat completion body before anything is counted or sent, so a
 * malformed request costs no quota and never reaches Qwen. Every failure is a QwenGuardError with
 * a stable code and the offending `param` (docs/errors.md lists them). Everything the guard will
 * serialise or estimate is bounded here: the whole body's size and nesting depth, JSON values only,
 * no `__proto__` keys; then the fields the guard reads, and the reservation rule's fields (cost.ts).
 */
import { planOutput } from './cost.js'
import { echo } from './echo.js'
import { invalidJson, invalidRequest, modelNotFound, requestTooLarge } from './errors.js'
import type { ChatMessageLike, ResolvedModel, ResolvedOptions } from './types.js'

/** Largest body accepted, in bytes (1 MiB): ~250k tokens of English, beyond most context windows' useful size. */
export const MAX_BODY_BYTES = 1_048_576

/**
 * Deepest nesting accepted anywhere in a body (the body itself is depth 0): 64. A message's image
 * URL is at depth 6; a tool's JSON schema at 4 plus 2 a level, so 30 levels of nested objects fit.
 */
export const MAX_JSON_DEPTH = 64

/** Content part types Qwen's compatible mode reads (`refusal` in an assistant turn, as OpenAI sends it back). */
export const CONTENT_PART_TYPES: ReadonlySet<string> = new Set([
  'text',
  'image_url',
  'input_audio',
  'video',
  'video_url',
  'refusal',
])

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
  /** Default: MAX_JSON_DEPTH. */
  maxDepth?: number
}

function fail(
  code: 'request_too_large' | 'invalid_json' | 'model_not_found' | 'invalid_request',
  message: string,
  param: string | null,
): never {
  if (code === 'request_too_large') throw requestTooLarge(message, { param })
  if (code === 'invalid_json') throw invalidJson(message)
  if (code === 'model_not_found') throw modelNotFound(message)
  throw invalidRequest(message, param)
}

function invalid(message: string, param: string): never {
  fail('invalid_request', message, param)
}

/** A path of keys and indexes as a `param`: `tools[0].function.parameters`, long keys shortened, at most 256 characters. */
function pathParam(path: ReadonlyArray<string | number>): string {
  let out = ''
  for (const step of path) {
    if (typeof step === 'number') out += `[${step}]`
    else if (/^[A-Za-z_$][\w$]{0,63}$/.test(step)) out += out === '' ? step : `.${step}`
    else out += `[${JSON.stringify(step.length > 32 ? `${step.slice(0, 32)}…` : step)}]`
    if (out.length > 256) return `${out.slice(0, 256)}…`
  }
  return out
}

/**
 * Walks the whole value once, before anything else reads it: every nested value must be JSON (a
 * plain object, an array, a string, a finite number, a boolean or null; undefined is dropped as
 * JSON.stringify drops it), no deeper than `maxDepth`, with no `__proto__` key (which some merges
 * turn into a prototype). For a value not parsed from text (an object handed over in process) it
 * also bounds the work: more nodes or string characters than `maxBytes` could hold is 413 at once.
 * Iterative: a body nested 100,000 deep costs no stack.
 */
function checkJsonShape(root: unknown, maxDepth: number, maxBytes: number): void {
  /** An object or array still to walk, and where it sits (for an error's `param`). */
  interface Node {
    value: object
    depth: number
    parent: Node | undefined
    key: string | number
  }
  /** The path of the value at `key` of `parent` (the root's when there is no parent). */
  const pathOf = (parent: Node | undefined, key: string | number): string => {
    if (!parent) return pathParam([])
    const path: Array<string | number> = [key]
    for (let at = parent; at.parent; at = at.parent) path.unshift(at.key)
    return pathParam(path)
  }
  const stack: Node[] = []
  let budget = maxBytes // every node is at least 1 byte of JSON text, every character at least 1 byte
  // A value is checked where it is found; only objects and arrays are kept to walk (a body is mostly
  // strings and numbers: no record is made for them).
  const check = (value: unknown, depth: number, parent: Node | undefined, key: string | number): void => {
    budget -= 1
    if (typeof value === 'string') budget -= value.length
    if (budget < 0) fail('request_too_large', `The request body is larger than ${maxBytes} bytes.`, null)
    if (value === null || value === undefined || typeof value === 'boolean' || typeof value === 'string') return
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) invalid(`Numbers must be finite, got ${String(value)}.`, pathOf(parent, key))
      return
    }
    if (typeof value !== 'object')
      invalid(`A request body holds JSON values only, got a ${typeof value}.`, pathOf(parent, key))
    if (depth >= maxDepth) invalid(`The request body is nested more than ${maxDepth} levels deep.`, pathOf(parent, key))
    stack.push({ value, depth, parent, key })
  }
  check(root, 0, undefined, '')
  while (stack.length > 0) {
    const node = stack.pop() as Node
    const { value, depth } = node
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) check(value[i], depth + 1, node, i)
      continue
    }
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null)
      invalid('A request body holds plain JSON objects only.', pathOf(node.parent, node.key))
    const keys = Object.keys(value)
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i] as string
      budget -= key.length
      if (key === '__proto__') invalid('The key "__proto__" is not allowed.', pathOf(node, key))
      check((value as Record<string, unknown>)[key], depth + 1, node, key)
    }
  }
}

/**
 * Turns a string, bytes or a parsed value into an object, bounding size and shape before anything
 * else reads it: text is measured, then parsed, then walked; an object is walked (which also bounds
 * its size) before it is measured by serialising it.
 */
function parseBody(body: unknown, limits: Required<ValidateLimits>): Record<string, unknown> {
  const { maxBodyBytes: maxBytes, maxDepth } = limits
  let value = body
  if (typeof body === 'string' || body instanceof Uint8Array) {
    let bytes: number
    // A UTF-16 code unit is at most 3 UTF-8 bytes: a short string needs no exact count.
    if (typeof body === 'string') bytes = body.length * 3 <= maxBytes ? body.length : Buffer.byteLength(body, 'utf8')
    else bytes = body.byteLength
    if (bytes > maxBytes)
      fail('request_too_large', `The request body is ${bytes} bytes; the limit is ${maxBytes} bytes.`, null)
    const text =
      typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')
    try {
      value = JSON.parse(text)
    } catch {
      fail('invalid_json', 'The request body is not valid JSON.', null)
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('invalid_json', 'The request body must be a JSON object.', null)
  }
  checkJsonShape(value, maxDepth, maxBytes)
  if (value !== body) return value as Record<string, unknown>
  const bytes = Buffer.byteLength(JSON.stringify(value), 'utf8')
  if (bytes > maxBytes)
    fail('request_too_large', `The request body is ${bytes} bytes; the limit is ${maxBytes} bytes.`, null)
  return value as Record<string, unknown>
}

function checkModel(body: Record<string, unknown>, options: ResolvedOptions): ResolvedModel {
  const { model } = body
  if (model === undefined || model === null) invalid('You must provide a model parameter.', 'model')
  if (typeof model !== 'string' || model.trim() === '')
    invalid(`model must be a non-empty string, got ${echo(model)}.`, 'model')
  const spec = Object.hasOwn(options.models, model) ? options.models[model] : undefined
  if (!spec || !options.allowedModels.has(model)) {
    fail('model_not_found', `The model ${echo(model)} does not exist or you do not have access to it.`, 'model')
  }
  return spec
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

/** A part's media field: an object with a string url (or, as Qwen also takes, a bare URL string). */
function checkMedia(part: Record<string, unknown>, field: string, param: string): void {
  const media = part[field]
  if (typeof media === 'string' || (isObject(media) && typeof media.url === 'string')) return
  invalid(`A ${field} content part must have ${field}.url, a string.`, `${param}.${field}`)
}

function checkContentPart(part: unknown, param: string): void {
  if (!isObject(part)) invalid('A content part must be an object.', param)
  const { type } = part
  if (typeof type !== 'string' || type === '') invalid('A content part must have a string type.', `${param}.type`)
  if (!CONTENT_PART_TYPES.has(type))
    invalid(
      `Unknown content part type ${echo(type)}; expected one of ${[...CONTENT_PART_TYPES].join(', ')}.`,
      `${param}.type`,
    )
  if ((type === 'text' || type === 'refusal') && typeof part[type] !== 'string')
    invalid(`A ${type} content part must have a string ${type}.`, `${param}.${type}`)
  if (type === 'image_url' || type === 'video_url') checkMedia(part, type, param)
  if (type === 'video' && !(Array.isArray(part.video) && part.video.every((frame) => typeof frame === 'string'))) {
    invalid('A video content part must have video, an array of image URLs.', `${param}.video`)
  }
  if (type === 'input_audio' && !(isObject(part.input_audio) && typeof part.input_audio.data === 'string')) {
    invalid('An input_audio content part must have input_audio.data, a string.', `${param}.input_audio`)
  }
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
  if (!Array.isArray(content))
    invalid(`content must be a string or an array of content parts, got ${typeof content}.`, param)
  content.forEach((part, j) => checkContentPart(part, `${param}[${j}]`))
}

/** Checks one message; its `messages[i]` param is only spelled out for an error. */
function checkMessage(value: unknown, i: number): void {
  const at = (field?: string) => `messages[${i}]${field ? `.${field}` : ''}`
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    invalid('Each message must be an object.', at())
  const message = value as Record<string, unknown>
  if (typeof message.role !== 'string' || !CHAT_ROLES.has(message.role)) {
    invalid(`Invalid role ${echo(message.role)}; expected one of ${[...CHAT_ROLES].join(', ')}.`, at('role'))
  }
  checkContent(message, i)
  if (message.name !== undefined && typeof message.name !== 'string') invalid('name must be a string.', at('name'))
  const calls = message.tool_calls
  if (calls !== undefined && calls !== null) {
    if (!Array.isArray(calls)) invalid('tool_calls must be an array.', at('tool_calls'))
    calls.forEach((call, j) => {
      if (!isObject(call)) invalid('A tool call must be an object.', at(`tool_calls[${j}]`))
    })
  }
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

function checkRange(body: Record<string, unknown>, field: string, min: number, max: number, minOpen = false): void {
  const value = body[field]
  if (value === undefined || value === null) return
  // The type first: comparing an object converts it, which runs (or fails on) its own toString.
  if (typeof value !== 'number' || !Number.isFinite(value) || (minOpen ? value <= min : value < min) || value > max) {
    invalid(`${field} must be a number in ${minOpen ? '(' : '['}${min}, ${max}], got ${echo(value)}.`, field)
  }
}

function checkStreaming(body: Record<string, unknown>): void {
  const { stream, stream_options: options } = body
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean')
    invalid(`stream must be a boolean, got ${echo(stream)}.`, 'stream')
  if (options === undefined || options === null) return
  if (stream !== true) invalid('The stream_options parameter is only allowed when stream is enabled.', 'stream_options')
  if (typeof options !== 'object' || Array.isArray(options))
    invalid('stream_options must be an object.', 'stream_options')
  const includeUsage = (options as { include_usage?: unknown }).include_usage
  if (includeUsage !== undefined && typeof includeUsage !== 'boolean') {
    invalid('stream_options.include_usage must be a boolean.', 'stream_options.include_usage')
  }
}

/** Tool (and deprecated function) definitions: counted as input, so their shape must be what the estimate reads. */
function checkDefinitions(body: Record<string, unknown>, field: 'tools' | 'functions'): void {
  const list = body[field]
  if (list === undefined || list === null) return
  if (!Array.isArray(list)) invalid(`${field} must be an array.`, field)
  list.forEach((item, i) => {
    const at = `${field}[${i}]`
    if (!isObject(item)) invalid(`Each of ${field} must be an object.`, at)
    const fn = field === 'tools' ? item.function : item
    const fnAt = field === 'tools' ? `${at}.function` : at
    if (field === 'tools') {
      if (typeof item.type !== 'string') invalid('A tool must have a string type.', `${at}.type`)
      if (item.type !== 'function') return
      if (!isObject(fn)) invalid('A function tool must have a function object.', fnAt)
    }
    const def = fn as Record<string, unknown>
    if (typeof def.name !== 'string' || def.name === '')
      invalid('A function must have a non-empty string name.', `${fnAt}.name`)
    if (def.parameters !== undefined && def.parameters !== null && !isObject(def.parameters)) {
      invalid('Function parameters must be a JSON schema object.', `${fnAt}.parameters`)
    }
  })
}

function checkOthers(body: Record<string, unknown>): void {
  checkRange(body, 'temperature', 0, 2)
  checkRange(body, 'top_p', 0, 1, true)
  checkRange(body, 'presence_penalty', -2, 2)
  checkRange(body, 'frequency_penalty', -2, 2)
  checkDefinitions(body, 'tools')
  checkDefinitions(body, 'functions')
  const { tool_choice: choice, response_format: format } = body
  if (choice !== undefined && choice !== null && typeof choice !== 'string' && !isObject(choice)) {
    invalid('tool_choice must be a string or an object.', 'tool_choice')
  }
  if (format !== undefined && format !== null) {
    if (!isObject(format)) invalid('response_format must be an object.', 'response_format')
    if (typeof format.type !== 'string') invalid('response_format must have a string type.', 'response_format.type')
  }
}

/**
 * Checks a chat completion body: a JSON string, bytes, or an already parsed value. Returns it
 * typed (the caller's object, not a copy); throws QwenGuardError (400/404/413, not retryable).
 * Checks, in order: size, JSON, shape (depth, JSON values, no `__proto__`), model, messages, the
 * reservation rule's fields (max_tokens, max_completion_tokens, n, thinking, search: cost.ts
 * planOutput), streaming flags, sampling ranges, tools, functions, tool_choice, response_format.
 */
export function validateChatRequest(body: unknown, options: ResolvedOptions, limits: ValidateLimits = {}): ChatRequest {
  const parsed = parseBody(body, {
    maxBodyBytes: limits.maxBodyBytes ?? MAX_BODY_BYTES,
    maxDepth: limits.maxDepth ?? MAX_JSON_DEPTH,
  })
  const model = checkModel(parsed, options)
  checkMessages(parsed)
  planOutput(parsed as unknown as ChatRequest, model, options)
  checkStreaming(parsed)
  checkOthers(parsed)
  return parsed as ChatRequest
}
