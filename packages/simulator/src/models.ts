import type { ResolvedLimits } from './types.js'

/**
 * Default limits per model: Model Studio docs, "Rate limits" (international endpoint, Singapore). RPS and TPS are
 * RPM/60 and TPM/60. `maxTokens` is the simulator's output cap per model (the largest `max_tokens`
 * it accepts); it follows the public model pages loosely and only matters for the 400 on range.
 */
const TABLE: Record<string, { rpm: number; tpm: number; maxTokens: number }> = {
  'qwen3-max': { rpm: 600, tpm: 1_000_000, maxTokens: 65_536 },
  'qwen3-max-2025-09-23': { rpm: 60, tpm: 100_000, maxTokens: 65_536 },
  'qwen-max': { rpm: 120, tpm: 100_000, maxTokens: 8_192 },
  'qwen-plus': { rpm: 600, tpm: 1_000_000, maxTokens: 32_768 },
  'qwen-flash': { rpm: 600, tpm: 5_000_000, maxTokens: 32_768 },
  'qwen-turbo': { rpm: 240, tpm: 100_000, maxTokens: 16_384 },
}

/** Defaults for a model that `limits` adds and the table does not know. */
export const NEW_MODEL_DEFAULTS = { rpm: 600, tpm: 1_000_000, maxTokens: 8_192 }

/** The built-in table with RPS/TPS derived. A fresh copy each call. */
export function builtinLimits(): Record<string, ResolvedLimits> {
  const out: Record<string, ResolvedLimits> = {}
  for (const [model, row] of Object.entries(TABLE)) {
    out[model] = { ...row, rps: row.rpm / 60, tps: row.tpm / 60 }
  }
  return out
}
