// A move (MeterTicket.move, meter-lua.ts `op == 'move'`) that Redis runs after its command timeout
// (redis-server paused with SIGSTOP): the settle that waited for the move (until its timeout) went to
// the old ticket, written behind the move on the connection, and counted the send there again beside
// the moved entry's reservation: 2 requests and reserved + used tokens for one send (a cancel: 1 request
// and the reservation) until they left the minute window. Written by an attack; failed before the fix.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { redisServerInstalled, startRedisServer, type RedisServer } from '../../../../test/support/redis-server.js'
import { createGuardStore } from '../../src/store.js'
import { MemoryMeter } from '../../src/upstream/meter.js'
import { paceLimits } from '../../src/upstream/pace-limits.js'
import { RedisMeter } from '../../src/upstream/redis-meter.js'
import { model } from './support.js'

const limits = paceLimits(model(), { safetyMargin: 0.97, rampUp: false, timeScale: 1 }, 1)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe.skipIf(!redisServerInstalled())('a move Redis runs after its timeout (redis-server paused)', () => {
  let server: RedisServer
  let redis: Redis
  beforeAll(async () => {
    server = await startRedisServer()
    redis = new Redis(server.url)
    redis.on('error', () => undefined)
  })
  afterAll(async () => {
    redis.disconnect()
    await server.stop()
  })

  const entries = async (key: string) => (await redis.lrange(key, 0, -1)).map((e) => e.split(':').slice(1).map(Number))

  for (const [name, requests, used] of [
    ['settled to fewer tokens', 1, 300],
    ['settled to more tokens than reserved', 1, 950],
    ['cancelled', 0, 0],
  ] as const) {
    it(`${name}: the send counts once, at the moved entry, with what the settle says`, async () => {
      const store = createGuardStore(
        { redis: redis as never, prefix: 'paused', onError: 'open', commandTimeoutMs: 100 },
        () => undefined,
      )
      const keys: [string, string] = [`paused:${name}:h`, `paused:${name}:l`]
      const m = new RedisMeter(store, keys, new MemoryMeter(() => Date.now()))
      const taken = await m.take(900, limits)
      if (!taken.ok) throw new Error('not admitted')
      process.kill(server.pid, 'SIGSTOP')
      let settled = false
      try {
        const move = taken.ticket.move!() // written to the paused server: times out, runs on SIGCONT
        void taken.ticket.recount(requests, used).then(() => (settled = true))
        await move
        await sleep(250) // the settle is written too (sent even during the outage)
      } finally {
        process.kill(server.pid, 'SIGCONT')
      }
      for (let i = 0; i < 50 && !settled; i++) await sleep(20)
      expect(settled).toBe(true) // never left hanging
      await sleep(200) // whatever the meter sends after the late reply
      const list = await entries(keys[1])
      const total = list.reduce((sum, [r, k]) => [sum[0]! + r!, sum[1]! + k!], [0, 0])
      expect(total).toEqual([requests, used]) // once, with what was used
      expect(list[0]).toEqual([0, 0]) // the old entry counts nothing
      if (requests > 0) expect(list.at(-1)).toEqual([requests, used]) // the moved one, settled
      store.close()
      m.close()
    })
  }
})
