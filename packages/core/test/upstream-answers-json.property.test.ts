// 5,000 generated JSON answers; the header of upstream-answers-support.ts says what is generated and checked.
import fc from 'fast-check'
import { describe, it } from 'vitest'
import { jsonCase, property, RUNS, SEED, watchProcess } from './upstream-answers-support.js'

watchProcess()

describe('upstream JSON answers (fast-check)', () => {
  it(`${RUNS} answers: a valid completion or a QwenGuardError in {400, 429, 502, 503, 504}; counters finite and in range; no lease; no secret`, async () => {
    await fc.assert(property(jsonCase), { numRuns: RUNS, seed: SEED, endOnFailure: true })
  }, 150_000)
})
