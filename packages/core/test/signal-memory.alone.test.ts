/**
 * What a call leaves behind on a signal its caller keeps for many calls, measured on the heap: with
 * a `clientGone` beside `signal` the two are followed by one signal of the call's own, and nothing of
 * it may stay on either source once the call ends. (AbortSignal.any did keep an entry on each source
 * for as long as the source lives: about 62 bytes a call on Node 20.20, found by an attack on it;
 * listeners are checked in call-leftovers.test.ts.) Calls refused by the caller's quota (never sent),
 * 60,000 of them per case, alone on the machine (a heap figure).
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createGuard } from '../src/guard.js'
import type { Guard } from '../src/guard-types.js'
import { completion, startUpstreamStub, type UpstreamStub } from './upstream-stub.js'

setFlagsFromString('--expose-gc')
const ask = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 5 }
const gc = runInNewContext('gc') as () => void

let stub: UpstreamStub
let guard: Guard
beforeAll(async () => {
  stub = await startUpstreamStub((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(completion({ prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 }))
  })
  guard = createGuard({
    upstream: { baseURL: stub.baseURL, apiKey: 'sk-leak', rampUp: false },
    quotas: { user: { rpm: 1, tpm: 1_000_000 } },
  })
  await (await guard.call({ user: 'hammer' }, ask)).response.json() // takes the one rpm: every later call is refused 429
})
afterAll(async () => {
  await guard.close()
  await stub.close()
})

async function heapAfter(calls: number, options: () => Parameters<typeof guard.call>[2]): Promise<number> {
  for (let i = 0; i < calls; i++) {
    const refused = await guard.call({ user: 'hammer' }, ask, options()).then(
      () => undefined,
      (error: { status?: number }) => error.status,
    )
    if (refused !== 429) throw new Error(`expected a 429, got ${String(refused)}`)
  }
  await new Promise((resolve) => setTimeout(resolve, 20))
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

async function growth(options: () => Parameters<typeof guard.call>[2]): Promise<number> {
  await heapAfter(20_000, options) // warm up
  const before = await heapAfter(0, options)
  const after = await heapAfter(60_000, options)
  return after - before
}

const MB = 1_000_000

describe('a signal kept for many calls, with a clientGone beside it', () => {
  it('leaves nothing on the heap per call, either way round (against the same calls without clientGone)', async () => {
    const job = new AbortController()
    const control = await growth(() => ({ signal: job.signal }))
    const perCall = await growth(() => ({ signal: job.signal, clientGone: new AbortController().signal }))
    const connection = new AbortController()
    const kept = await growth(() => ({ signal: new AbortController().signal, clientGone: connection.signal }))
    // 60,000 calls at 62 bytes would be 3.7 MB.
    expect(perCall - control).toBeLessThan(1.5 * MB)
    expect(kept - control).toBeLessThan(1.5 * MB)
  })
})
