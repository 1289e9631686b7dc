import { describe, expect, it } from 'vitest'
import type { Guard } from '../../src/guard-types.js'
import { attachLazyClient, isLazyClientAttached } from '../../src/client/lazy-client.js'

function fakeGuard() {
  const made: unknown[] = []
  const guard = { client: (identity: unknown) => (made.push(identity), { identity }) } as unknown as Guard
  return { guard, made }
}

describe('attachLazyClient', () => {
  it('reads the identity and builds the client only when asked, once per request', () => {
    const { guard, made } = fakeGuard()
    const shared = {}
    const req = Object.create(shared) as { qwen?: unknown; qwenIdentity?: unknown; ip: string }
    req.ip = '10.0.0.1'
    let reads = 0
    attachLazyClient([{ holder: req, shared }], { guard, subject: req, identify: (r) => (reads++, { user: r.ip }) })
    expect(reads).toBe(0)
    expect(req.qwen).toBe(req.qwen)
    expect(reads).toBe(1)
    expect(made).toEqual([{ user: '10.0.0.1' }])
    expect(isLazyClientAttached(req)).toBe(true)
  })

  it('installs on the shared prototype once; a second holder sees its own attachment', () => {
    const { guard } = fakeGuard()
    const shared = {}
    const a = Object.create(shared) as { qwenIdentity?: unknown }
    const b = Object.create(shared) as { qwenIdentity?: unknown }
    attachLazyClient([{ holder: a, shared }], { guard, subject: a, identify: () => ({ user: 'a' }) })
    attachLazyClient([{ holder: b, shared }], { guard, subject: b, identify: () => ({ user: 'b' }) })
    expect(Object.getOwnPropertyNames(a)).toEqual([])
    expect([a.qwenIdentity, b.qwenIdentity]).toEqual([{ user: 'a' }, { user: 'b' }])
  })

  it('lets a later middleware set the identity, which drops the client built for the old one', () => {
    const { guard, made } = fakeGuard()
    const req = {} as { qwen?: unknown; qwenIdentity?: unknown }
    const state = {} as { qwen?: unknown; qwenIdentity?: unknown }
    attachLazyClient([{ holder: req }, { holder: state, only: 'qwen' }], {
      guard,
      subject: req,
      identify: () => ({ user: 'x' }),
    })
    const first = req.qwen
    req.qwenIdentity = { user: 'y' }
    expect(req.qwen).not.toBe(first)
    expect(state.qwen).toBe(req.qwen)
    expect('qwenIdentity' in state).toBe(false)
    expect(made).toEqual([{ user: 'x' }, { user: 'y' }])
  })

  it('leaves objects it never attached to alone: assigning defines a plain property', () => {
    const shared = {}
    attachLazyClient([{ holder: Object.create(shared), shared }], {
      guard: fakeGuard().guard,
      subject: {},
      identify: () => ({}),
    })
    const other = Object.create(shared) as { qwen?: unknown }
    expect(other.qwen).toBeUndefined()
    other.qwen = 'mine'
    expect(other.qwen).toBe('mine')
    expect(isLazyClientAttached(other)).toBe(false)
  })
})
