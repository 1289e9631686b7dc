/**
 * Call ids (issue 13 item 5): every event of one call carries the same `callId`, different for every
 * call, so an app can follow a call (queued, upstream_refusal, fallback, admitted, settled; refused)
 * without correlation code of its own. The caller may give the id (`guard.call(..., { callId })`, or
 * the SDK request header `x-qwen-guard-call-id`); a bad one is refused clearly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard, isQwenGuardError, type GuardEvent, type GuardOptions } from '../packages/core/src/index.js'
import { startSimulator, type Simulator } from '../packages/simulator/src/index.js'

const KEY = 'sk-callid-secret-key-55e0'
const ACCOUNT = 'acct-callid'
const messages = [{ role: 'user' as const, content: 'hello' }]
const ask = { model: 'qwen-plus', messages, max_tokens: 16 }

let sim: Simulator
beforeAll(async () => {
  sim = await startSimulator({ accounts: [{ id: ACCOUNT, keys: [KEY] }], burst: false })
})
afterAll(() => sim.close())

const CALL_EVENTS = [
  'admitted',
  'refused',
  'shadow_refused',
  'queued',
  'upstream_refusal',
  'fallback',
  'account_disabled',
  'settled',
  'usage_invalid',
] as const

function recorded(extra: Partial<GuardOptions> = {}) {
  const guard = createGuard({
    upstream: { baseURL: sim.url, accounts: [{ id: ACCOUNT, apiKey: KEY }], rampUp: false },
    ...extra,
  })
  const events: GuardEvent[] = []
  for (const type of CALL_EVENTS) guard.on(type, (e) => events.push(e))
  const settled = () => new Promise((resolve) => setTimeout(resolve, 30)) // JSON answers settle after returning
  return { guard, events, settled }
}

const idOf = (e: GuardEvent) => ('callId' in e ? e.callId : undefined)

describe('call ids', () => {
  it('every event of one call carries its id: upstream_refusal, admitted, settled, and no event lacks one', async () => {
    // qwen-max paced at 1 rps: the second of two parallel calls queues, then falls back to qwen-plus;
    // the first call's first attempt gets a 500 from Qwen and is retried.
    const { guard, events, settled } = recorded({
      models: { 'qwen-max': { rpm: 600, rps: 1, fallback: ['qwen-plus'] } },
      queue: { maxWaitMs: 5_000 },
    })
    sim.inject({ kind: 'internal-error', times: 1 })
    const [a, b] = await Promise.all([
      guard.call({ user: 'u-a' }, { ...ask, model: 'qwen-max' }),
      guard.call({ user: 'u-b' }, { ...ask, model: 'qwen-max' }),
    ])
    await settled()
    expect(a.info.callId).not.toBe(b.info.callId)
    for (const info of [a.info, b.info]) {
      const mine = events.filter((e) => idOf(e) === info.callId)
      expect(mine.map((e) => e.type)).toContain('admitted')
      expect(mine.map((e) => e.type)).toContain('settled')
    }
    // Nothing without an id, nothing with a third id.
    expect(new Set(events.map(idOf))).toEqual(new Set([a.info.callId, b.info.callId]))
    const types = new Set(events.map((e) => e.type))
    expect(types).toContain('upstream_refusal')
    const refusal = events.find((e) => e.type === 'upstream_refusal')!
    const retried = [a, b].find((r) => r.info.attempts === 2)!
    expect(idOf(refusal)).toBe(retried.info.callId)
    await guard.close()
  })

  it('queued and fallback events name the call that waited', async () => {
    const { guard, events, settled } = recorded({
      models: { 'qwen-max': { rpm: 600, rps: 1, fallback: ['qwen-plus'] }, 'qwen-plus': { rpm: 600, rps: 1 } },
      queue: { maxWaitMs: 5_000 },
    })
    const results = await Promise.all(
      [1, 2, 3].map((i) => guard.call({ user: `u-${i}` }, { ...ask, model: 'qwen-max' })),
    )
    await settled()
    const waited = events.filter((e) => e.type === 'queued' || e.type === 'fallback')
    expect(waited.length).toBeGreaterThan(0)
    const ids = new Set(results.map((r) => r.info.callId))
    for (const e of waited) expect(ids.has(idOf(e)!)).toBe(true)
    await guard.close()
  })

  it('a refused call: the refused event and the decision header carry the same id', async () => {
    const { guard, events } = recorded({ quotas: { user: { rpm: 1 } }, headers: { decision: true } })
    await guard.call({ user: 'u-r' }, ask)
    const error = await guard.call({ user: 'u-r' }, ask).catch((e: unknown) => e)
    expect(isQwenGuardError(error)).toBe(true)
    const refused = events.find((e) => e.type === 'refused')!
    expect(idOf(refused)).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/)
    expect((error as { headers: Headers }).headers.get('x-qwen-guard-decision')).toBe(
      `refused;binding="user-rpm";call-id="${idOf(refused)}"`,
    )
    await guard.close()
  })

  it('the caller gives the id: guard.call option and the SDK request header; bad ids are refused', async () => {
    const { guard, events, settled } = recorded()
    const own = await guard.call({ user: 'u-own' }, ask, { callId: 'order-42/attempt-1' })
    expect(own.info.callId).toBe('order-42/attempt-1')
    const client = guard.client({ user: 'u-own' })
    await client.chat.completions.create(ask, { headers: { 'x-qwen-guard-call-id': 'req-7f3' } })
    await settled()
    // (The second may have queued behind the first on the built-in pace: its events then start with 'queued'.)
    expect(events.filter((e) => idOf(e) === 'order-42/attempt-1').map((e) => e.type)).toEqual(['admitted', 'settled'])
    expect(
      events
        .filter((e) => idOf(e) === 'req-7f3')
        .map((e) => e.type)
        .slice(-2),
    ).toEqual(['admitted', 'settled'])
    expect(events.filter((e) => idOf(e) === undefined)).toEqual([])

    await expect(guard.call({ user: 'u-own' }, ask, { callId: 'has "quotes"' })).rejects.toThrow(TypeError)
    await expect(guard.call({ user: 'u-own' }, ask, { callId: '' })).rejects.toThrow(TypeError)
    const bad = await client.chat.completions
      .create(ask, { headers: { 'x-qwen-guard-call-id': 'x'.repeat(129) } })
      .catch((e: unknown) => e)
    expect(isQwenGuardError(bad) && [bad.status, bad.code]).toEqual([400, 'invalid_request'])
    await guard.close()
  })
})
