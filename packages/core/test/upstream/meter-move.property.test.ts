// A send that leaves later than the jitter allowance covers is recorded again when it leaves
// (SlidingLog.move, MeterTicket.move; send-delays.ts, "A send later than the allowance"). Property:
// sends leave their grant after random delays, some far past the allowance J (a stalled event loop, a
// new connection: up to 900 ms); every send whose delay exceeds J is moved at the moment it leaves,
// before any later take. Upstream counts arrivals: no window of the unstretched second (or minute)
// of arrival times ever holds more than the limit. The same runs without the moves find a window
// over the limit (the property has teeth).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits, type PaceLimits } from '../../src/upstream/pace-limits.js'
import { SlidingLog } from '../../src/upstream/sliding-log.js'
import { model } from './support.js'

interface Send {
  id: number
  /** When it reaches upstream: its entry's time plus its delay. */
  arrival: number
  tokens: number
  moved: boolean
}

const scenarioArb = fc.record({
  rps: fc.integer({ min: 2, max: 12 }),
  tpsPerRequest: fc.integer({ min: 20, max: 400 }),
  margin: fc.constantFrom(0.9, 0.97, 0.99),
  jitter: fc.constantFrom(0, 5, 31, 80),
  ops: fc.array(
    fc.record({
      // Mostly a saturating load (a take every few ms), sometimes a pause.
      gap: fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 0, max: 400 }).map((x) => x / 10) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 1_500 }) },
      ),
      tokenFrac: fc.integer({ min: 0, max: 1_000 }).map((x) => x / 1_000),
      // Most sends leave within the allowance, some far past it (under one second: see send-delays.ts).
      late: fc.oneof(
        { weight: 3, arbitrary: fc.integer({ min: 0, max: 1_000 }).map((x) => x / 1_000) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 9_000 }).map((x) => x / 10) },
      ),
    }),
    { minLength: 200, maxLength: 600 },
  ),
})

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never

function limitsOf(s: Scenario): PaceLimits {
  const spec = {
    ...model(),
    rps: s.rps,
    rpm: 60 * s.rps,
    tps: s.rps * s.tpsPerRequest,
    tpm: 60 * s.rps * s.tpsPerRequest,
  }
  return paceLimits(spec, { safetyMargin: s.margin, rampUp: false, timeScale: 1 }, 1, s.jitter)
}

/** Largest count of requests and tokens of `sends` in any window [x, x + w) of arrival times. */
function busiest(sends: Send[], w: number): { requests: number; tokens: number } {
  const sorted = [...sends].sort((a, b) => a.arrival - b.arrival)
  let requests = 0
  let tokens = 0
  let start = 0
  let sum = 0
  for (let i = 0; i < sorted.length; i++) {
    sum += sorted[i]!.tokens
    while (sorted[i]!.arrival - sorted[start]!.arrival >= w) sum -= sorted[start++]!.tokens
    requests = Math.max(requests, i - start + 1)
    tokens = Math.max(tokens, sum)
  }
  return { requests, tokens }
}

/**
 * Takes at the scenario's times; each admitted send leaves `late` x (J + its share of 900 ms) after its
 * entry. With `moves`, a send leaving more than J after its entry is moved when it leaves, which the
 * loop runs before any take at or after that moment.
 */
function run(s: Scenario, moves: boolean): { sends: Send[]; limits: PaceLimits } {
  const limits = limitsOf(s)
  const log = new SlidingLog()
  const sends: Send[] = []
  const pending: Send[] = [] // moves not run yet, by arrival
  let t = 0
  for (const op of s.ops) {
    t += op.gap
    pending.sort((a, b) => a.arrival - b.arrival)
    while (pending.length > 0 && pending[0]!.arrival <= t) {
      const send = pending.shift()!
      send.id = log.move(send.arrival, send.id, limits) ?? send.id
    }
    const tokens = Math.max(1, Math.round(op.tokenFrac ** 4 * limits.tps)) // mostly small, some a second's worth
    const taken = log.take(t, tokens, limits)
    if (!taken.ok) continue
    const entryAt = t - taken.lateMs
    // Within the allowance: 0..J after the entry (and never before the take returned).
    const delay = op.late <= 1 ? op.late * s.jitter : op.late
    const arrival = Math.max(t, entryAt + delay)
    const send: Send = { id: taken.id, arrival, tokens, moved: arrival - entryAt > s.jitter }
    sends.push(send)
    if (moves && send.moved) pending.push(send)
  }
  return { sends, limits }
}

function overLimit(s: Scenario, moves: boolean): string | undefined {
  const { sends, limits } = run(s, moves)
  const second = busiest(sends, limits.secondMs)
  if (second.requests > s.rps || second.tokens > limits.tps) return `second ${JSON.stringify(second)}`
  const minute = busiest(sends, 60 * limits.secondMs)
  if (minute.requests > limits.rpm || minute.tokens > limits.tpm) return `minute ${JSON.stringify(minute)}`
  return undefined
}

describe('sends that leave later than the jitter allowance, moved when they leave', () => {
  it('property: upstream never counts more than the limit in any second or minute of arrivals', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        expect(overLimit(s, true)).toBeUndefined()
      }),
      { numRuns: 300, seed: 20261202 }, // 4,000 runs of random seeds passed too
    )
  })

  it('without the moves the same arrivals break a limit (what the moves prevent)', () => {
    const found = fc.check(
      fc.property(scenarioArb, (s) => overLimit(s, false) === undefined),
      { numRuns: 300, seed: 20261202 },
    )
    expect(found.failed).toBe(true)
  })
})

describe('MeterTicket.move on the memory meter', () => {
  const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

  it('the send counts from when it left: the windows free it that much later, and a settle reaches it', async () => {
    let now = 1_000_000
    const meter = new MemoryMeter(() => now)
    const taken = await meter.take(900, limits) // 900 of 1,000 tokens per second
    expect(taken.ok).toBe(true)
    if (!taken.ok) return
    now += 300
    const before = await meter.take(200, limits, true)
    expect(before.ok === false && before.reason).toBe('rate')
    const waitBefore = before.ok ? 0 : before.waitMs
    await taken.ticket.move!() // it left 300 ms after its grant
    const after = await meter.take(200, limits, true)
    expect(after.ok).toBe(false)
    if (after.ok) return
    expect(after.waitMs).toBeCloseTo(waitBefore + 300, 6)
    // The old entry counts nothing, the moved one all of it; a settle rewrites the moved one.
    const firstId = meter.log.nextId() - 2
    expect(meter.log.countsOf(firstId)).toEqual({ requests: 0, tokens: 0 })
    await taken.ticket.recount(1, 100)
    expect(meter.log.countsOf(firstId + 1)).toEqual({ requests: 1, tokens: 100 })
    expect(meter.log.countsOf(firstId)).toEqual({ requests: 0, tokens: 0 })
    expect((await meter.take(200, limits, true)).ok).toBe(true)
  })

  it('a cancelled send does not move: nothing is appended, nothing counts', async () => {
    const meter = new MemoryMeter(() => 0)
    const cancelled = await meter.take(10, limits)
    if (!cancelled.ok) throw new Error('not admitted')
    await cancelled.ticket.recount(0, 0)
    const next = meter.log.nextId()
    await cancelled.ticket.move!()
    expect(meter.log.nextId()).toBe(next)
    expect(meter.usedFraction(limits)).toBe(0)
  })
})
