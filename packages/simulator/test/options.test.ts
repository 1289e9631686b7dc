import { describe, expect, it } from 'vitest'
import { resolveOptions } from '../src/options.js'

describe('resolveOptions', () => {
  it('defaults to Model Studio docs, "Rate limits" with RPS = RPM / 60 and TPS = TPM / 60', () => {
    const limits = resolveOptions().accounts[0]!.limits
    expect(limits.get('qwen3-max')).toMatchObject({ rpm: 600, tpm: 1_000_000, rps: 10 })
    expect(limits.get('qwen3-max-2025-09-23')).toMatchObject({ rpm: 60, tpm: 100_000, rps: 1 })
    expect(limits.get('qwen-max')).toMatchObject({ rpm: 120, tpm: 100_000, rps: 2, maxTokens: 8192 })
    expect(limits.get('qwen-flash')!.tps).toBeCloseTo(5_000_000 / 60)
    expect(limits.get('qwen-turbo')).toMatchObject({ rpm: 240, tpm: 100_000, rps: 4 })
  })

  it('layers account overrides over global ones, re-deriving per-second limits (RPS at least 1)', () => {
    const o = resolveOptions({
      limits: { 'qwen-plus': { rpm: 1200 }, 'qwen-max': { rpm: 6, tpm: 600 } },
      accounts: [{ id: 'a', keys: ['k'], models: { 'qwen-plus': { tps: 5 } } }],
    })
    const a = o.accounts[0]!.limits
    expect(a.get('qwen-plus')).toMatchObject({ rpm: 1200, rps: 20, tpm: 1_000_000, tps: 5 })
    expect(a.get('qwen-max')).toMatchObject({ rps: 1, tps: 10 })
  })

  it('rejects duplicate keys and nonsense values', () => {
    expect(() =>
      resolveOptions({
        accounts: [
          { id: 'a', keys: ['k'] },
          { id: 'b', keys: ['k'] },
        ],
      }),
    ).toThrow(/twice/)
    expect(() => resolveOptions({ timeScale: 0 })).toThrow(/timeScale/)
    expect(() => resolveOptions({ limits: { 'qwen-plus': { rpm: -1 } } })).toThrow(/rpm/)
  })
})
