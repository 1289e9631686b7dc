/**
 * What an answer visibly holds: the content, the reasoning (`reasoning_content`, billed as output:
 * QWEN-FACTS.md section 4) and the tool calls' names and arguments (the legacy `function_call` too).
 * Upstream data: only strings count, anything else is nothing. Measured two ways: estimated tokens
 * (the charge of a stream that ended without usage) and UTF-8 bytes (the floor under the completion
 * tokens Qwen's usage may claim, settlement.ts).
 */
import { estimateTextTokens } from './estimate.js'

/** What the choices of an answer (`message`) or of a stream chunk (`delta`) show. */
export interface Shown {
  /** Completion tokens, estimated. */
  tokens: number
  /** UTF-8 bytes. */
  bytes: number
}

export function shownIn(choices: unknown, part: 'message' | 'delta'): Shown {
  const shown: Shown = { tokens: 0, bytes: 0 }
  eachShownText(choices, part, (text) => {
    shown.tokens += estimateTextTokens(text)
    shown.bytes += Buffer.byteLength(text)
  })
  return shown
}

/**
 * The UTF-8 bytes alone (`shownIn(...).bytes`): all a JSON answer's settlement needs, without
 * estimating the tokens of a whole answer on every call.
 */
export function shownBytesIn(choices: unknown, part: 'message' | 'delta'): number {
  let bytes = 0
  eachShownText(choices, part, (text) => {
    bytes += Buffer.byteLength(text)
  })
  return bytes
}

/** Calls `visit` with each non-empty string the choices show. */
function eachShownText(choices: unknown, part: 'message' | 'delta', visit: (text: string) => void): void {
  if (!Array.isArray(choices)) return
  const add = (value: unknown) => {
    if (typeof value === 'string' && value !== '') visit(value)
  }
  for (const choice of choices as unknown[]) {
    if (typeof choice !== 'object' || choice === null) continue
    const message = (choice as Record<string, unknown>)[part]
    if (typeof message !== 'object' || message === null) continue
    const {
      content,
      reasoning_content: reasoning,
      tool_calls: calls,
      function_call: call,
    } = message as Record<string, unknown>
    add(content)
    add(reasoning)
    addCall(call, add)
    if (Array.isArray(calls)) {
      for (const toolCall of calls as unknown[]) {
        if (typeof toolCall === 'object' && toolCall !== null)
          addCall((toolCall as Record<string, unknown>).function, add)
      }
    }
  }
}

/** A function call's name and arguments (a stream sends the arguments in pieces, each counted). */
function addCall(call: unknown, add: (value: unknown) => void): void {
  if (typeof call !== 'object' || call === null) return
  const { name, arguments: args } = call as Record<string, unknown>
  add(name)
  add(args)
}
