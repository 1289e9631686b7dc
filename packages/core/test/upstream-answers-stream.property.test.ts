// 5,000 generated upstream streams; the header of upstream-answers-support.ts says what is generated and checked.
import fc from 'fast-check'
import { describe, it } from 'vitest'
import { property, RUNS, SEED, streamCase, watchProcess } from './upstream-answers-support.js'

watchProcess()

describe('upstream streams (fast-check)', () => {
  it(`${RUNS} streams: each ends with [DONE] (only when Qwen sent it) or an error event the SDK throws on; counters finite and in range; no lease; no secret`, async () => {
    await fc.assert(property(streamCase), { numRuns: RUNS, seed: SEED + 1, endOnFailure: true })
  }, 150_000)
})
