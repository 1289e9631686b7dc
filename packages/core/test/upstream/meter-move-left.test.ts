// A send whose body is written more than the minute window and a second after its grant (a large
// upload on a slow link): its entry has left the log (SlidingLog compacts in batches, the meter script at
// once), and the move found nothing to move, so from its arrival on the send counted in no window
// (a full second's tokens beside it were admitted). Now the ticket's counts are recorded at the move.
// Written by an attack; the memory case and the script's failed before the fix.
import { describe, expect, it } from 'vitest'
import { describeRedis, redisClient } from '../../../../test/support/redis.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { meterScriptAt, model } from './support.js'

const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)

describe('a move of a send whose entry has left the memory log', () => {
  it('counts it from when it left; a settle reaches the moved entry', async () => {
    let now = 1_000_000
    const meter = new MemoryMeter(() => now)
    const uploadId = meter.log.nextId()
    const upload = await meter.take(900, limits) // 900 of 1,000 tokens per second
    if (!upload.ok) throw new Error('not admitted')
    now += 63_000 // the upload's body is written 63 s after its grant
    expect((await meter.take(200, limits, true)).ok).toBe(true) // the log compacts past its entry
    expect(meter.log.countsOf(uploadId)).toBeUndefined() // its entry left the log
    await upload.ticket.move!()
    const beside = await meter.take(200, limits, true)
    expect(beside.ok === false && beside.reason).toBe('rate') // was admitted: the upload counted nowhere
    await upload.ticket.recount(1, 100)
    expect(meter.log.countsOf(meter.log.nextId() - 1)).toEqual({ requests: 1, tokens: 100 })
    expect((await meter.take(200, limits, true)).ok).toBe(true)
  })

  it('a cancelled send whose entry left the log moves nothing', async () => {
    let now = 0
    const meter = new MemoryMeter(() => now)
    const cancelled = await meter.take(900, limits)
    if (!cancelled.ok) throw new Error('not admitted')
    await cancelled.ticket.recount(0, 0)
    now += 63_000
    await meter.take(200, limits, true)
    const next = meter.log.nextId()
    await cancelled.ticket.move!()
    expect(meter.log.nextId()).toBe(next)
  })
})

describeRedis('a move of a send whose entry has left the meter script’s list', () => {
  const { redis, prefix } = redisClient()
  const keys: [string, string] = [`${prefix}:left:h`, `${prefix}:left:l`]
  let now = 1_767_000_000_000
  const run = (op: string, ...args: string[]) => meterScriptAt(redis, keys, limits, now, op, ...args)

  it('counts it from when it left with the counts its ticket gives', async () => {
    const taken = await run('take', '900')
    expect(taken[0]).toBe(1)
    now += 63_000 // the list keeps the minute window and a second: the entry is trimmed at the next call
    expect((await run('dry', '200'))[0]).toBe(1)
    expect(await redis.llen(keys[1])).toBe(0)
    const moved = await run('move', taken[1]!, '1', '900')
    expect(moved[1]).not.toBe('') // was '': nothing moved, the send counted nowhere
    const beside = await run('dry', '200')
    expect(beside[0]).toBe(0)
    expect(beside[2]).toBe('rate')
    await run('settle', moved[1]!, '1', '100')
    expect((await run('dry', '200'))[0]).toBe(1)
    // A ticket of another incarnation (the meter was lost) moves nothing.
    expect((await run('move', `1.${taken[1]!.split('.')[1]}`, '1', '900'))[1]).toBe('')
  })
})
