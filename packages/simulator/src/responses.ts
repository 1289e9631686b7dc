import { messageFor } from './errors.js'
import type { FaultSpec } from './types.js'

/** Everything needed to write one accepted completion. */
export interface Completion {
  id: string
  requestId: string
  model: string
  created: number
  pieces: string[]
  reasoning: string[]
  promptTokens: number
  /** 'length' when max_tokens was set (the text is cut at it), 'stop' otherwise. */
  finishReason: 'stop' | 'length'
}

function usage(c: Completion) {
  const completion = c.pieces.length + c.reasoning.length
  return {
    prompt_tokens: c.promptTokens,
    completion_tokens: completion,
    total_tokens: c.promptTokens + completion,
    prompt_tokens_details: { cached_tokens: 0 },
    ...(c.reasoning.length > 0 ? { completion_tokens_details: { reasoning_tokens: c.reasoning.length } } : {}),
  }
}

/** The non-streaming `chat.completion` body. A template rather than JSON.stringify of an object:
 * this is the hot path of the benchmark, and only the text needs escaping. */
export function completionBody(c: Completion): string {
  const reasoning = c.reasoning.length > 0 ? `,"reasoning_content":${JSON.stringify(c.reasoning.join(''))}` : ''
  return (
    `{"id":"${c.id}","object":"chat.completion","created":${c.created},"model":${JSON.stringify(c.model)},` +
    `"choices":[{"index":0,"message":{"role":"assistant","content":${JSON.stringify(c.pieces.join(''))}${reasoning}},` +
    `"finish_reason":"${c.finishReason}","logprobs":null}],"usage":${JSON.stringify(usage(c))},"system_fingerprint":null}`
  )
}

/** A stream frame and the number of output tokens emitted before it may be written (for pacing). */
export interface Frame {
  text: string
  /** Index of the output token this frame carries (0-based), or -1 for frames that follow the last token. */
  token: number
}

/**
 * The SSE frames of a streamed completion: a role chunk, one chunk per reasoning token, one per
 * content token, a finish chunk, the usage chunk (only with include_usage: `choices: []`), `[DONE]`.
 */
export function streamFrames(c: Completion, includeUsage: boolean): Frame[] {
  const head = `data: {"id":"${c.id}","object":"chat.completion.chunk","created":${c.created},"model":${JSON.stringify(c.model)},"choices":`
  const chunk = (delta: string, finish: string) =>
    `${head}[{"index":0,"delta":${delta},"finish_reason":${finish},"logprobs":null}]}\n\n`
  const frames: Frame[] = [{ text: chunk('{"role":"assistant","content":""}', 'null'), token: 0 }]
  let token = 0
  for (const piece of c.reasoning) {
    frames.push({
      text: chunk(`{"content":null,"reasoning_content":${JSON.stringify(piece)}}`, 'null'),
      token: token++,
    })
  }
  for (const piece of c.pieces)
    frames.push({ text: chunk(`{"content":${JSON.stringify(piece)}}`, 'null'), token: token++ })
  frames.push({ text: chunk('{}', `"${c.finishReason}"`), token: -1 })
  if (includeUsage) frames.push({ text: `${head}[],"usage":${JSON.stringify(usage(c))}}\n\n`, token: -1 })
  frames.push({ text: 'data: [DONE]\n\n', token: -1 })
  return frames
}

/**
 * Cuts a stream after `afterChunks` content chunks and appends the error frame of a stream-error
 * fault; nothing follows it, not even [DONE]. With 0 the error is the very first event (no role
 * chunk either), so nothing at all was streamed before it.
 */
export function failedStreamFrames(frames: Frame[], fault: FaultSpec, requestId: string): Frame[] {
  const contentFrames = frames.filter((f) => f.token >= 0).length - 1
  const after = Math.min(fault.afterChunks ?? 2, contentFrames)
  const out = after > 0 ? frames.slice(0, 1 + after) : []
  out.push({ text: streamErrorFrame(fault, requestId), token: out.at(-1)?.token ?? 0 })
  return out
}

function streamErrorFrame(fault: FaultSpec, requestId: string): string {
  if (fault.kind === 'stream-error-native') {
    const code = fault.code ?? 'Throttling.AllocationQuota'
    const message = fault.message ?? messageFor(code)
    return `event:error\n:HTTP_STATUS/${fault.status ?? 429}\ndata:${JSON.stringify({ code, message, request_id: requestId })}\n\n`
  }
  const code = fault.code ?? 'limit_burst_rate'
  return `data: ${JSON.stringify({ error: { code, message: fault.message ?? messageFor(code), type: code } })}\n\n`
}

/** The body of a sse-error-body fault: `data: {"error":{...}}` as text/event-stream. */
export function sseErrorBody(fault: FaultSpec, requestId: string): string {
  const code = fault.code ?? 'limit_requests'
  const error = { message: fault.message ?? messageFor(code), type: code, param: null, code }
  return `data: ${JSON.stringify({ error, request_id: requestId })}\n\n`
}

/** The body of a native-error-body fault: DashScope's native flat shape. */
export function nativeErrorBody(fault: FaultSpec, requestId: string): string {
  const code = fault.code ?? 'Throttling.RateQuota'
  return JSON.stringify({ code, message: fault.message ?? messageFor(code), request_id: requestId })
}
