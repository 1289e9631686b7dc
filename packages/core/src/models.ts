/**
 * The built-in model table: default per-account limits of the international (Singapore) endpoint,
 * Model Studio docs, "Rate limits" (international endpoint). Check them against your own console; override with `options.models`
 * (globally) or `accounts[i].models` (one account with a raised quota).
 *
 * Context windows and output caps are the published Model Studio figures for the current aliases
 * (late 2025); prices are the international list prices of the lowest input tier. Both change:
 * override them when your account differs. No fallbacks are configured by default, because
 * whether a cheaper model is an acceptable answer is the app's decision, not ours.
 *
 * Thinking (Model Studio docs, "Deep thinking" and OpenAI-compatible mode): the hybrid Qwen3 models reason only when asked
 * (`enable_thinking: true`); their longest reasoning is `maxReasoningTokens`. The dated qwen3-max
 * snapshot and qwen-max have no thinking mode. A thinking-only model (a `-thinking` variant, QwQ)
 * added through `options.models` should say `thinking: 'always'`; an open-source Qwen3 model that
 * thinks by default, `thinking: 'on'`.
 */
import type { ModelSpec } from './types.js'

/** Built-in models. Every entry gives rpm and tpm; rps/tps default to rpm/60 and tpm/60. */
export const BUILTIN_MODELS: Readonly<Record<string, Readonly<ModelSpec>>> = Object.freeze({
  'qwen3-max': {
    rpm: 600,
    tpm: 1_000_000,
    contextWindow: 262_144,
    maxOutputTokens: 65_536,
    thinking: 'off',
    maxReasoningTokens: 81_920,
    price: { inputPerMillion: 1.2, outputPerMillion: 6 },
  },
  // A dated snapshot has its own, much smaller quota: pinning it costs capacity.
  'qwen3-max-2025-09-23': {
    rpm: 60,
    tpm: 100_000,
    contextWindow: 262_144,
    maxOutputTokens: 65_536,
    thinking: 'unsupported',
    price: { inputPerMillion: 1.2, outputPerMillion: 6 },
  },
  'qwen-max': {
    rpm: 120,
    tpm: 100_000,
    contextWindow: 32_768,
    maxOutputTokens: 8_192,
    thinking: 'unsupported',
    price: { inputPerMillion: 1.6, outputPerMillion: 6.4 },
  },
  'qwen-plus': {
    rpm: 600,
    tpm: 1_000_000,
    contextWindow: 1_000_000,
    maxOutputTokens: 32_768,
    thinking: 'off',
    maxReasoningTokens: 81_920,
    price: { inputPerMillion: 0.4, outputPerMillion: 1.2 },
  },
  'qwen-flash': {
    rpm: 600,
    tpm: 5_000_000,
    contextWindow: 1_000_000,
    maxOutputTokens: 32_768,
    thinking: 'off',
    maxReasoningTokens: 81_920,
    price: { inputPerMillion: 0.05, outputPerMillion: 0.4 },
  },
  'qwen-turbo': {
    rpm: 240,
    tpm: 100_000,
    contextWindow: 1_000_000,
    maxOutputTokens: 16_384,
    thinking: 'off',
    maxReasoningTokens: 38_912,
    price: { inputPerMillion: 0.05, outputPerMillion: 0.2 },
  },
} satisfies Record<string, ModelSpec>)

/** Defaults for a model spec that leaves these out (see ModelSpec's JSDoc). */
export const DEFAULT_CONTEXT_WINDOW = 131_072
export const DEFAULT_MAX_OUTPUT_TOKENS = 8_192
export const DEFAULT_THINKING = 'off' as const
export const DEFAULT_MAX_REASONING_TOKENS = 32_768
