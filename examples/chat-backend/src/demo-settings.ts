/**
 * The numbers of the demo, in one place. They are deliberately tight: a person clicking around
 * should meet every behaviour of the guard (a refusal, a fallback, a queue) within a minute.
 */
import type { ModelSpec, QuotaPolicy } from '@qwen-guard/core'

/** The model the page asks for. */
export const CHAT_MODEL = 'qwen3-max'
export const FALLBACK_MODELS = ['qwen-plus', 'qwen-flash']

/**
 * Per browser (demo user). Six requests a minute is a handful of questions plus half a burst; four
 * in flight lets one burst overlap enough calls to use every model and then queue for them.
 */
export const DEMO_USER_QUOTA: QuotaPolicy = {
  rpm: 6,
  tpm: 4_000,
  concurrency: 4,
  tokensPerDay: 50_000,
}

/** Callers of the /v1 relay without the page's cookie (SDK scripts), keyed by client address. */
export const RELAY_USER_QUOTA: QuotaPolicy = {
  rpm: 30,
  tpm: 30_000,
  concurrency: 4,
}

/** The answer length the page asks for; burst requests ask for less so a burst stays cheap. */
export const CHAT_MAX_TOKENS = 160
export const BURST_MAX_TOKENS = 48

/**
 * Upstream limits of the embedded simulator, which the guard is told about too (the guard paces
 * under what it believes the account allows). qwen3-max is made scarce so that two browsers, or a
 * burst, push calls onto the fallbacks, and the fallbacks take one call a second each, so a burst
 * that overlaps more than three calls waits in the guard's fair queue. The per-second limits are set
 * explicitly: derived ones (rpm / 60) would be below one request a second at these demo sizes.
 */
export const SIMULATED_MODEL_LIMITS: Record<string, { rpm: number; rps: number; tpm: number; tps: number }> = {
  'qwen3-max': { rpm: 12, rps: 1, tpm: 20_000, tps: 2_000 },
  'qwen-plus': { rpm: 30, rps: 1, tpm: 100_000, tps: 5_000 },
  'qwen-flash': { rpm: 60, rps: 1, tpm: 400_000, tps: 20_000 },
}

/** Model table given to the guard: the simulator's limits when simulating, Qwen's own table otherwise. */
export function demoModels(simulated: boolean): Record<string, Partial<ModelSpec>> {
  const models: Record<string, Partial<ModelSpec>> = {}
  if (simulated) {
    for (const [name, limits] of Object.entries(SIMULATED_MODEL_LIMITS)) models[name] = { ...limits }
  }
  models[CHAT_MODEL] = { ...models[CHAT_MODEL], fallback: [...FALLBACK_MODELS] }
  return models
}

/** Simulator latency: about what qwen3-max feels like, so streaming is visible token by token. */
export const SIMULATED_LATENCY = { firstTokenMs: 300, perTokenMs: 20 }
