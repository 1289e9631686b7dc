/**
 * Issue 9 item 8: a user's parallel calls over their concurrency limit. With the stock `openai`
 * SDK and its default retries (two, honouring retry-after-ms), six parallel calls of a user whose
 * limit is four must all succeed through the relay, on Express and on Koa, even when each call
 * lasts longer than the SDK's retries wait: the guard waits for a lease (queue.waitForConcurrency,
 * the default) instead of refusing with a guessed wait.
 */
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Simulator } from '../packages/simulator/src/index.js'
import {
  ResponseTap,
  guardOptions,
  startApp,
  startSecretSimulator,
  type Framework,
  type GuardedApp,
} from './http-support.js'

const CALL_MS = 2_500 // each call streams 50 tokens at 50 ms: longer than the SDK's ~1.5 s of retry waits

for (const framework of ['express', 'koa'] as Framework[]) {
  describe(`${framework}: six parallel calls, concurrency 4, stock SDK retries`, () => {
    let sim: Simulator
    let app: GuardedApp
    beforeAll(async () => {
      sim = await startSecretSimulator({ burst: false, perTokenMs: CALL_MS / 50 })
      app = await startApp(framework, guardOptions(sim, { user: { concurrency: 4 } }), new ResponseTap())
    })
    afterAll(async () => {
      await app.close()
      await sim.close()
    })

    it('all six succeed, never more than four in flight', async () => {
      const client = new OpenAI({ baseURL: app.baseURL, apiKey: 'app-key', defaultHeaders: { 'x-user': 'parallel' } })
      let inFlight = 0
      let peak = 0
      const started = performance.now()
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, async () => {
          const stream = await client.chat.completions.create({
            model: 'qwen-plus',
            messages: [{ role: 'user', content: 'Count slowly.' }],
            max_tokens: 50,
            stream: true,
          })
          inFlight++
          peak = Math.max(peak, inFlight)
          let text = ''
          for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
          inFlight--
          return text
        }),
      )
      const elapsed = performance.now() - started
      const failed = results
        .filter((r) => r.status === 'rejected')
        .map((r) => String((r as PromiseRejectedResult).reason))
      expect(failed).toEqual([])
      expect(peak).toBeLessThanOrEqual(4)
      // The two that waited started when the first ones ended: about two call lengths in all.
      expect(elapsed).toBeGreaterThan(2 * CALL_MS * 0.9)
      expect(elapsed).toBeLessThan(2 * CALL_MS + 4_000)
    })
  })
}
