// The memory log (SlidingLog) and its Lua twin (meter-lua.ts) on a real redis-server, driven by the
// same random sequences of takes, dry takes, moves (SlidingLog.move, the script's 'move'), settles and
// cancels, with the measured jitter allowance growing between them (windows change length) and the
// ramp on or off. The script reads the time from its last two arguments instead of Redis `TIME`, so
// both run on one hand-driven clock: every answer (admitted or not, how long to wait and why, how
// far back an entry was recorded, what a move gave) and every fraction must agree. Written by an
// attack. It found two differences: a move or a settle of an entry older than the minute window and
// a second (a body written, or a stream settled, that long after its grant): the script had dropped
// it (nothing moved, nothing given back), the memory log still held it until its next compaction
// (it moved it, and gave the unused spacing back). 15,000 runs of other seeds passed after the fix.
import fc from 'fast-check'
import { expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { paceLimits, type PaceLimits } from '../../src/upstream/pace-limits.js'
import { SlidingLog } from '../../src/upstream/sliding-log.js'
import { meterScriptAt, model } from './support.js'

const T0 = 1_767_000_000_000

const opArb = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('take' as const), tokens: fc.integer({ min: 1, max: 600 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('dry' as const), tokens: fc.integer({ min: 0, max: 600 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('move' as const), pick: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('settle' as const),
      pick: fc.nat(),
      requests: fc.constantFrom(0, 1, 1, 1),
      tokens: fc.integer({ min: 0, max: 900 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('jitter' as const), by: fc.integer({ min: 1, max: 200 }) }) },
)
const scenarioArb = fc.record({
  ramp: fc.boolean(),
  margin: fc.constantFrom(1, 0.8),
  steps: fc.array(
    fc.record({
      // Mostly busy, sometimes a pause; now and then most of a minute (entries that leave the log).
      gap: fc.oneof(
        { weight: 5, arbitrary: fc.integer({ min: 0, max: 60 }) },
        { weight: 5, arbitrary: fc.integer({ min: 0, max: 3_000 }) },
        { weight: 1, arbitrary: fc.integer({ min: 10_000, max: 40_000 }) },
      ),
      op: opArb,
    }),
    {
      minLength: 40,
      maxLength: 160,
    },
  ),
})

describeRedis('SlidingLog and the meter script agree on takes, moves and settles', () => {
  const { redis, prefix } = redisClient()
  let run = 0

  it('property: the same answers and fractions after every step', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        run++
        const keys: [string, string] = [`${prefix}:twin${run}:h`, `${prefix}:twin${run}:l`]
        const spec = model()
        const config = {
          safetyMargin: s.margin,
          rampUp: s.ramp ? { initialRps: 2, factor: 2 } : (false as const),
          timeScale: 1,
        }
        let jitter = 0
        let limits: PaceLimits = paceLimits(spec, config, 1, jitter)
        const log = new SlidingLog()
        const tickets: Array<{ memory: number; shared: string; counts: { requests: number; tokens: number } }> = []
        let t = 0
        const lua = (op: string, ...args: string[]) => meterScriptAt(redis, keys, limits, T0 + t, op, ...args)
        const fractions = async () => {
          const reply = await lua('dry', '0')
          const f = reply.slice(-4).map(Number)
          const m = log.fractionsAt(T0 + t, limits)
          return { lua: f, memory: [m.rps, m.tps, m.rpm, m.tpm] }
        }
        for (const [step, { gap, op }] of s.steps.entries()) {
          t += gap
          const where = `step ${step} (${op.kind}) at ${t}`
          if (op.kind === 'jitter') {
            jitter += op.by // only grows: the script keeps the largest J of the last 10 s, the memory log has one J
            limits = paceLimits(spec, config, 1, jitter)
          } else if (op.kind === 'take' || op.kind === 'dry') {
            const memory = log.take(T0 + t, op.tokens, limits, op.kind === 'dry')
            const reply = await lua(op.kind, String(op.tokens))
            expect(Number(reply[0]) === 1, where).toBe(memory.ok)
            if (memory.ok) {
              if (op.kind === 'take') {
                expect(Number(reply[2]), where).toBeCloseTo(memory.lateMs, 2)
                tickets.push({
                  memory: memory.id,
                  shared: String(reply[1]),
                  counts: { requests: 1, tokens: op.tokens },
                })
              }
            } else {
              expect(reply[2], where).toBe(memory.reason)
              if (memory.waitMs === Infinity) expect(reply[1], where).toBe('-1')
              else expect(Number(reply[1]), where).toBeCloseTo(memory.waitMs, 2)
            }
          } else if (tickets.length > 0) {
            const ticket = tickets[op.pick % tickets.length]!
            if (op.kind === 'move') {
              // What the ticket counts (MeterTicket's), for an entry that has left the log.
              const { requests, tokens } = ticket.counts
              const moved = log.move(T0 + t, ticket.memory, limits, ticket.counts)
              const reply = await lua('move', ticket.shared, String(requests), String(tokens))
              expect(reply[1] !== '', where).toBe(moved !== undefined)
              if (moved !== undefined) {
                ticket.memory = moved
                ticket.shared = String(reply[1])
              }
            } else {
              if (ticket.counts.requests > 0 || ticket.counts.tokens > 0)
                ticket.counts = { requests: op.requests, tokens: op.tokens }
              log.recount(T0 + t, ticket.memory, op.requests, op.tokens, limits)
              await lua('settle', ticket.shared, String(op.requests), String(op.tokens))
            }
          }
          const f = await fractions()
          for (let i = 0; i < 4; i++) expect(f.lua[i], `${where}: fraction ${i}`).toBeCloseTo(f.memory[i]!, 5)
        }
        await redis.del(...keys)
      }),
      { numRuns: 150, seed: 1701, endOnFailure: true }, // no shrinking: a failure reports at once
    )
  }, 120_000)
})
