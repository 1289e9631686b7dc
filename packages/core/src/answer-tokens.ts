/**
 * The completion tokens an answer visibly holds, estimated from its text: the content, the reasoning
 * (`reasoning_content`, billed as output: QWEN-FACTS.md section 4) and the tool calls' names and
 * arguments (the legacy `function_call` too). Upstream data: only strings count, anything else is 0.
 * Used as the charge of a stream that ended without usage, and as the floor under the usage Qwen
 * claims (settlement.ts, MIN_USAGE_SHARE).
 */
import { estimateTextTokens } from './estimate.js'

/** Estimated completion tokens of the choices of an answer (`message`) or of a stream chunk (`delta`). */
export function shownTokensOf(choices: unknown, part: 'message' | 'delta'): number {
  if (!Array.isArray(choices)) return 0
  let tokens = 0
  for (const choice of choices as unknown[]) {
    if (typeof choice === 'object' && choice !== null)
      tokens += messageTokens((choice as Record<string, unknown>)[part])
  }
  return tokens
}

function messageTokens(message: unknown): number {
  if (typeof message !== 'object' || message === null) return 0
  const {
    content,
    reasoning_content: reasoning,
    tool_calls: calls,
    function_call: call,
  } = message as Record<string, unknown>
  let tokens = textTokens(content) + textTokens(reasoning) + callTokens(call)
  if (Array.isArray(calls)) {
    for (const toolCall of calls as unknown[]) {
      if (typeof toolCall === 'object' && toolCall !== null)
        tokens += callTokens((toolCall as Record<string, unknown>).function)
    }
  }
  return tokens
}

/** A function call's name and arguments (a stream sends the arguments in pieces, each counted). */
function callTokens(call: unknown): number {
  if (typeof call !== 'object' || call === null) return 0
  const { name, arguments: args } = call as Record<string, unknown>
  return textTokens(name) + textTokens(args)
}

function textTokens(value: unknown): number {
  return typeof value === 'string' && value !== '' ? estimateTextTokens(value) : 0
}
