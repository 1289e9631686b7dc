// The fairness load both shared-queue suites run (single redis-server and the 3-node cluster): not a
// test file itself. 'spread' sends from four instances (one call at a time on each); b, c and d send
// four calls at a time, all on instance 0. Each user keeps 4 calls waiting.
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'vitest'
import { isQwenGuardError } from '../../src/errors.js'
import { classifyRefusal } from '../../src/upstream/classify.js'
import type { UpstreamPool } from '../../src/upstream/pool.js'
import { request } from './support.js'

export const FAIR_USERS = ['spread', 'b', 'c', 'd'] as const

const PLAN: Array<[user: string, pool: number]> = [
  ['spread', 0],
  ['spread', 1],
  ['spread', 2],
  ['spread', 3],
  ...['b', 'c', 'd'].flatMap((u) => [0, 0, 0, 0].map((p) => [u, p] as [string, number])),
]

export interface FairLoadResult {
  /** Calls served per user of FAIR_USERS, counted from 1 s in (after the queue has formed). */
  shares: number[]
  /** Every granted slot's queue wait, ms. */
  waits: number[]
  upstream429: number
  /** Refusals that came later than maxWaitMs + 250 ms. */
  refusedLate: number
}

/** Jain's fairness index of the shares: 1 when equal, 1/n when one user has everything. */
export function jain(values: number[]): number {
  const sum = values.reduce((a, b) => a + b, 0)
  const squares = values.reduce((a, b) => a + b * b, 0)
  return (sum * sum) / (values.length * squares)
}

/** Runs the plan for 5 s against the simulator at `simUrl` through four pools sharing one store. */
export async function runFairLoad(pools: UpstreamPool[], simUrl: string, maxWaitMs: number): Promise<FairLoadResult> {
  const served = new Map<string, number>()
  const waits: number[] = []
  let upstream429 = 0
  let refusedLate = 0
  const stopAt = Date.now() + 5_000
  const countFrom = Date.now() + 1_000 // after the queue has formed
  const loop = async (user: string, index: number) => {
    const pool = pools[index]!
    while (Date.now() < stopAt) {
      const asked = Date.now()
      try {
        const slot = await pool.acquire(request({ user, model: 'm1', deadline: asked + 60_000 }))
        waits.push(slot.queuedMs)
        const res = await fetch(`${simUrl}/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${slot.apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: slot.model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
        })
        const text = await res.text()
        if (res.ok) {
          await slot.settle(20)
          if (asked >= countFrom && Date.now() < stopAt) served.set(user, (served.get(user) ?? 0) + 1)
        } else {
          upstream429++
          await slot.fail(classifyRefusal({ status: res.status, body: text }))
        }
      } catch (error) {
        if (!isQwenGuardError(error)) throw error
        expect(error.code).toBe('upstream_saturated')
        if (Date.now() - asked > maxWaitMs + 250) refusedLate++
        await sleep(20)
      }
    }
  }
  await Promise.all(PLAN.map(([user, index]) => loop(user, index)))
  return { shares: FAIR_USERS.map((u) => served.get(u) ?? 0), waits, upstream429, refusedLate }
}
