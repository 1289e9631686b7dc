import { describe, expect, it } from 'vitest'
import { BUILTIN_MODELS } from '../src/models.js'

describe('BUILTIN_MODELS', () => {
  it('has the international default limits of Model Studio docs, "Rate limits"', () => {
    const limits = Object.fromEntries(Object.entries(BUILTIN_MODELS).map(([name, m]) => [name, [m.rpm, m.tpm]]))
    expect(limits).toEqual({
      'qwen3-max': [600, 1_000_000],
      'qwen3-max-2025-09-23': [60, 100_000],
      'qwen-max': [120, 100_000],
      'qwen-plus': [600, 1_000_000],
      'qwen-flash': [600, 5_000_000],
      'qwen-turbo': [240, 100_000],
    })
  })

  it('prices qwen3-max at $1.20 / $6.00 per million tokens', () => {
    expect(BUILTIN_MODELS['qwen3-max']!.price).toEqual({ inputPerMillion: 1.2, outputPerMillion: 6 })
  })

  it('configures no fallbacks and gives every model a context window and output cap', () => {
    for (const [name, m] of Object.entries(BUILTIN_MODELS)) {
      expect(m.fallback, name).toBeUndefined()
      expect(m.contextWindow! > m.maxOutputTokens!, name).toBe(true)
      expect(Number.isInteger(m.maxOutputTokens), name).toBe(true)
    }
  })

  it('cannot be changed by a caller', () => {
    expect(() => {
      ;(BUILTIN_MODELS as Record<string, unknown>)['qwen-new'] = { rpm: 1, tpm: 1 }
    }).toThrow()
  })
})
