/**
 * What a call is charged once it reached Qwen, decided in one place: Qwen's `usage` when it is
 * usable, otherwise the reservation; a stream without a usage chunk, its estimate; a call that failed
 * after Qwen accepted it, the prompt part. Upstream numbers are untrusted input: nothing that is not
 * a finite, non-negative count within the bound below ever reaches a counter, and a usage that claims
 * far fewer completion tokens than the answer visibly holds is not believed (MIN_USAGE_SHARE).
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
   * A complete answer: its `usage` as received (anything; checked here), and the completion tokens
   * its text is estimated at (answer-tokens.ts; default 0).
   */
  | { usage: unknown; shownCompletionTokens?: number }
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
    if (usage && usage.completion >= usageFloor(input.shownCompletionTokens))
      return {
        tokens: usage.total,
        promptTokens: usage.prompt,
        completionTokens: usage.completion,
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
 * The fewest completion tokens a usage may claim for an answer whose text is estimated at `shown`,
 * as a share of it: the estimate is within +17 % of Qwen's tokenizer on text (bench/RESULTS.md,
 * estimator), so an honest count stays far above a quarter of it even for text the estimate reads
 * badly (long runs of one character). A usage below the floor (all zeros, say, from a broken proxy)
 * is as unusable as a missing one: the call is charged its reservation.
 */
export const MIN_USAGE_SHARE = 0.25

/** Tokens below the share a short answer may still claim (rounding, a one-word answer). */
const USAGE_FLOOR_SLACK = 8

function usageFloor(shown: number | undefined): number {
  return Math.max(0, countOrZero(shown ?? 0) * MIN_USAGE_SHARE - USAGE_FLOOR_SLACK)
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
