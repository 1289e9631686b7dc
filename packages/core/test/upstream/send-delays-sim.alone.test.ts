// The end result of the measured jitter allowance, against the simulator (real time): sends that
// leave their grant late by a varying amount (a slow store round trip, a busy loop) reach upstream
// out of the pacer's step. Measured, the allowance covers them: no upstream 429 once a late send has
// been measured (0 in most runs, 1-2 seen in CI). The control run
// hides the same delays from the measurement (they happen after `sending()`), which is the fixed
// margin of before: the simulator refuses some. An `.alone.test.ts` (vitest.config.ts): the simulator
// runs in this process and stamps arrivals on its own event loop, so other test files beside it on a
// 2-core machine add delays after the wire that no guard can measure (2 upstream 429s seen once in CI);
// the 30 rps case counts its sends where they leave (`wire`), which that lag cannot move.
import { startSimulator, countPromptTokens } from '../../../simulator/src/index.js'
import { describe, expect, it } from 'vitest'
import { isQwenGuardError } from '../../src/errors.js'
import { classifyRefusal } from '../../src/upstream/classify.js'
import { makePool } from './support.js'
import { busiestSecond } from '../../../../test/support/busiest-second.js'

const RPS = 10
const LATE_MS = 80 // well past the 31 ms the 0.97 margin tolerates

/** Seeded: every 7th call (of each user's sequence) is LATE_MS late, the others 0-3 ms. */
function delayOf(n: number): number {
  return n % 7 === 3 ? LATE_MS : n % 4
}

async function run(measured: boolean, delayOf: (n: number) => number, rps = RPS) {
  const sim = await startSimulator({
    accounts: [{ id: 'acct-a', keys: ['sk-a'] }],
    limits: { 'qwen-plus': { rpm: 100 * rps, tpm: 10_000_000, rps } },
    burst: false,
  })
  const { pool } = makePool({
    accounts: [{ id: 'acct-a', apiKey: 'sk-a' }],
    models: { 'qwen-plus': { rpm: 100 * rps, tpm: 10_000_000, rps, fallback: [] } },
    upstream: { rampUp: false, baseURL: sim.url },
    queue: { maxWaitMs: 2_000, maxSize: 1_000 },
  })
  await fetch(`${sim.url}/models`, { headers: { authorization: 'Bearer sk-a' } }).then((r) => r.text())
  let upstream429 = 0
  let count = 0
  // When each request left for the simulator (just before its fetch): the arrivals a network without
  // jitter would deliver. The simulator stamps an arrival only when this process's loop reads it, so
  // on a loaded machine its own count adds delays no guard can see (a helper measured 4-42 ms of
  // stamp lag under two CPU hogs, and 1 refusal in 5 runs of sends spaced right by these times).
  const wire: number[] = []
  const startAt = Date.now()
  const stopAt = startAt + 5_000
  let acceptedAt2s = 0
  const user = async (name: string) => {
    while (Date.now() < stopAt) {
      const messages = [{ role: 'user', content: `hi from ${name}` }]
      const prompt = countPromptTokens(messages)
      try {
        const slot = await pool.acquire({
          user: name,
          model: 'qwen-plus',
          promptTokens: prompt,
          reservedTokens: prompt + 4,
          deadline: stopAt + 2_000,
        })
        const late = delayOf(count++)
        if (measured) {
          await new Promise((r) => setTimeout(r, late))
          slot.sending?.()
        } else {
          slot.sending?.()
          await new Promise((r) => setTimeout(r, late))
        }
        wire.push(performance.now())
        const res = await fetch(`${sim.url}/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: slot.model, messages, max_tokens: 4 }),
        })
        const text = await res.text()
        if (res.ok) await slot.settle(6)
        else {
          if (res.status === 429) upstream429++
          await slot.fail(classifyRefusal({ status: res.status, body: text }))
        }
      } catch (error) {
        if (!isQwenGuardError(error)) throw error
      }
    }
  }
  const marker = setTimeout(() => (acceptedAt2s = sim.stats().accepted), 2_000)
  await Promise.all(Array.from({ length: 3 * rps }, (_, i) => user(`u${i}`)))
  clearTimeout(marker)
  const accepted = sim.stats().accepted
  const lane = sim.stats().accounts['acct-a']?.['qwen-plus']
  await pool.close()
  await sim.close()
  return {
    upstream429,
    wirePer1s: busiestSecond(wire),
    accepted,
    steadyRate: (accepted - acceptedAt2s) / ((Date.now() - startAt - 2_000) / 1000),
    lane,
  }
}

describe('measured jitter allowance against the simulator', () => {
  it(`sends up to ${LATE_MS} ms late after their grant: at most the first late sends refused when measured, many when not`, async () => {
    const measured = await run(true, delayOf)
    const hidden = await run(false, delayOf)
    console.log(`[send-delays-sim] upstream 429s: measured ${measured.upstream429}, hidden ${hidden.upstream429}`)
    // Measure-then-adapt: a late send whose delay is not known yet when the sends after it are
    // granted (the first sends of a process are not sampled either) can still meet one of them in an
    // upstream second; CI saw 1 or 2 such in a run. Every later one is covered.
    expect(measured.upstream429).toBeLessThanOrEqual(2)
    expect(measured.lane?.maxRequestsPer1s).toBeLessThanOrEqual(RPS)
    // The price: each second window is 1 s + ~LATE_MS instead of 1,031 ms. Still most of the limit.
    expect(measured.steadyRate).toBeGreaterThan(0.8 * RPS)
    // Only the fixed 31 ms margin: a late send and an on-time one ten sends later meet in one
    // upstream second (11 > 10). Seeded delays make this every 7th call; several per run.
    expect(hidden.upstream429).toBeGreaterThan(measured.upstream429)
    expect(hidden.wirePer1s).toBeGreaterThan(RPS)
  }, 30_000)

  it('one send 150 ms late on a busy saturated lane, past the allowance: moved when it leaves, no upstream 429', async () => {
    // At 30 rps the allowance's p99 leaves one late send out (120 samples when it comes, 4 s into the
    // run), and the 0.97 margin's slack is under one request a second (0.9): the meter counted the
    // send at its grant and let a full second of later sends beside it.
    const rps = 30
    const once = (n: number) => (n === 120 ? 150 : n % 4)
    const measured = await run(true, once, rps)
    const hidden = await run(false, once, rps)
    console.log(
      `[send-delays-sim] one late send: upstream 429s measured ${measured.upstream429}, hidden ${hidden.upstream429}; ` +
        `busiest second on the wire measured ${measured.wirePer1s}, hidden ${hidden.wirePer1s} (limit ${rps})`,
    )
    // Counted where the sends leave, not where the simulator stamps them: at 30 rps the margin's
    // slack is 0.9 of a request a second, and the simulator's stamp lag on a loaded machine (not the
    // guard's: see `wire` above) spent it in about 1 run in 5 under two CPU hogs. Before the move the
    // late send left beside a full second of later sends: 31 on the wire, 1 upstream 429.
    expect(measured.wirePer1s).toBeLessThanOrEqual(rps)
    expect(hidden.wirePer1s).toBeGreaterThan(rps)
  }, 30_000)
})
