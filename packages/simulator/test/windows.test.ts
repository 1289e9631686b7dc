import { describe, expect, it } from 'vitest'
import { Lane } from '../src/limits.js'
import { resolveOptions } from '../src/options.js'
import { ArrivalLog } from '../src/sliding-window.js'
import type { ResolvedLimits, SimulatorOptions } from '../src/types.js'

const LIMITS: ResolvedLimits = { rpm: 1_000_000, tpm: 1e12, rps: 1_000_000, tps: 1e12, maxTokens: 8192 }

function lane(limits: Partial<ResolvedLimits> = {}, options: SimulatorOptions = {}) {
  const resolved = resolveOptions(options)
  return new Lane(resolved.accounts[0]!, 'm', { ...LIMITS, ...limits }, resolved.burst)
}

/** Offers a call at `t`; accepts it when allowed. Returns the refusal or 'ok'. */
function offer(l: Lane, t: number, tokens = 1): string {
  const refusal = l.check(t, tokens)
  if (refusal) return refusal
  l.accept(t, tokens, 0)
  return 'ok'
}

describe('ArrivalLog', () => {
  it('keeps an arrival in a window of length W while now - t < W', () => {
    const log = new ArrivalLog()
    log.advance(0)
    log.push(0, 10)
    log.advance(999.9)
    expect([log.count1, log.tokensIn1]).toEqual([1, 10])
    log.advance(1000)
    expect([log.count1, log.count2, log.count60, log.tokensIn1, log.tokensIn60]).toEqual([0, 1, 1, 0, 10])
    log.advance(60_000)
    expect([log.count60, log.tokensIn60]).toEqual([0, 0])
  })

  it('grows past its initial capacity without losing arrivals', () => {
    const log = new ArrivalLog()
    for (let i = 0; i < 1000; i++) {
      log.advance(i * 10)
      log.push(i * 10, 1)
    }
    log.advance(9990)
    expect(log.count60).toBe(1000)
    expect(log.count1).toBe(100) // arrivals at 9000..9990 exclusive of 8990
    log.advance(9990 + 59_000)
    expect(log.count60).toBe(100)
  })
})

describe('limits of one account x model', () => {
  it('refuses the call past RPM, and admits again once the oldest call slides out', () => {
    const l = lane({ rpm: 3 }, { burst: false })
    expect([0, 20_000, 40_000, 50_000].map((t) => offer(l, t))).toEqual(['ok', 'ok', 'ok', 'limit_requests'])
    expect(offer(l, 59_999)).toBe('limit_requests')
    expect(offer(l, 60_000)).toBe('ok') // the call at 0 left; a fixed window would have said the same only at 60 s by luck
    expect(offer(l, 70_000)).toBe('limit_requests') // 20 s, 40 s and 60 s are still inside
    expect(offer(l, 80_000)).toBe('ok')
  })

  it('refuses by RPS inside one second, by TPM and TPS on tokens', () => {
    const rps = lane({ rps: 2 }, { burst: false })
    expect([0, 1, 2, 1000].map((t) => offer(rps, t))).toEqual(['ok', 'ok', 'limit_requests', 'ok'])
    const tpm = lane({ tpm: 100 }, { burst: false })
    expect([0, 1000, 2000].map((t) => offer(tpm, t, 40))).toEqual(['ok', 'ok', 'insufficient_quota'])
    expect(offer(tpm, 2001, 20)).toBe('ok') // exactly up to the limit
    const tps = lane({ tps: 50 }, { burst: false })
    expect([0, 10, 1000].map((t) => offer(tps, t, 30))).toEqual(['ok', 'insufficient_quota', 'ok'])
  })

  it('checks requests before tokens before burst', () => {
    const l = lane({ rps: 1, tps: 1 }, { burst: { floor: 1, factor: 1 } })
    expect(offer(l, 0, 1)).toBe('ok')
    expect(offer(l, 1, 100)).toBe('limit_requests')
    const t = lane({ tps: 1 }, { burst: { floor: 1, factor: 1 } })
    expect(offer(t, 0, 1)).toBe('ok')
    expect(offer(t, 1, 100)).toBe('insufficient_quota')
    expect(offer(t, 2, 0)).toBe('limit_burst_rate')
  })

  it('applies the burst rule cur + 1 > max(floor, factor x prev) with the default floor max(2, ceil(rps / 2))', () => {
    const l = lane({ rps: 10 }) // floor 5, factor 2
    expect(l.burstFloor).toBe(5)
    // Second [0, 1000): 5 allowed from cold, the 6th refused although RPS is 10.
    expect([0, 1, 2, 3, 4, 5].map((t) => offer(l, t))).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'limit_burst_rate'])
    // Second [1000, 2000): prev = 5 -> up to 10, then RPS stops it first (requests are checked before burst).
    const next = Array.from({ length: 11 }, (_, i) => offer(l, 1000 + i))
    expect(next.filter((r) => r === 'ok')).toHaveLength(10)
    expect(next[10]).toBe('limit_requests')
    // Windows slide: at 2500 prev = (500, 1500] = 10 calls, so up to 20 would be allowed (RPS caps at 10).
    expect(l.check(2500, 1)).toBeUndefined()
    // Two quiet seconds later prev is 0 again: back to the floor.
    const cold = Array.from({ length: 6 }, (_, i) => offer(l, 3010 + i))
    expect(cold.slice(5)).toEqual(['limit_burst_rate'])
  })

  it('uses a custom burst floor and factor, and none when burst is false', () => {
    const l = lane({}, { burst: { floor: 2, factor: 3 } })
    expect([0, 1, 2].map((t) => offer(l, t))).toEqual(['ok', 'ok', 'limit_burst_rate'])
    expect(Array.from({ length: 7 }, (_, i) => offer(l, 1000 + i))).toEqual([
      ...Array(6).fill('ok'),
      'limit_burst_rate',
    ])
    const off = lane({}, { burst: false })
    expect(Array.from({ length: 100 }, (_, i) => offer(off, i)).every((r) => r === 'ok')).toBe(true)
  })

  it('refuses nothing it does not count: refused calls leave the windows unchanged', () => {
    const l = lane({ rps: 2 }, { burst: false })
    for (let i = 0; i < 50; i++) offer(l, i)
    expect(l.accepted).toBe(2)
    expect(offer(l, 1000)).toBe('ok')
  })

  it('reports the exact largest 1 s and 60 s windows', () => {
    const l = lane({}, { burst: false })
    // Busiest second: (600, 1600] holds 900, 1500 and 1600 (3 calls, 105 tokens); [0, 900] also has 3 calls.
    for (const [t, n] of [
      [0, 5],
      [300, 5],
      [900, 5],
      [1500, 50],
      [1600, 50],
      [61_000, 1],
    ] as const)
      offer(l, t, n)
    const s = l.snapshot()
    expect(s.maxRequestsPer1s).toBe(3)
    expect(s.maxTokensPer1s).toBe(105) // 900, 1500, 1600
    expect(s.maxRequestsPer60s).toBe(5) // 0..1600; at 61 000 only 1500, 1600 and itself remain
    expect(s.maxTokensPer60s).toBe(115)
    expect([s.accepted, s.promptTokens, s.totalTokens]).toEqual([6, 116, 116])
  })
})
