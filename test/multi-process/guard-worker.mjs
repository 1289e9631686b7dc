// One instance of test/multi-process.alone.test.ts: a guard from the BUILT @qwen-guard/core (dist/, as an
// app installs it) on the shared store, with every user of the test calling through it in closed
// loops, counting what each user was admitted. Protocol over the IPC channel:
//   parent -> { type: 'setup', setup }      child -> { type: 'ready' }   (guard built, connection open)
//   parent -> { type: 'start', startAt }    child -> { type: 'done', result }
/* global fetch, setTimeout */
import { subscribe } from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'
import { createGuard, isQwenGuardError } from '@qwen-guard/core'
import { Cluster, Redis } from 'ioredis'

/**
 * The store connection the parent asked for: { kind: 'redis', url } or { kind: 'cluster', nodes }
 * (an ioredis Cluster over the startup nodes of test/support/redis-cluster.ts).
 */
function connect(store) {
  if (store.kind === 'redis') return new Redis(store.url, { maxRetriesPerRequest: 1 })
  if (store.kind === 'cluster') return new Cluster(store.nodes, { redisOptions: { maxRetriesPerRequest: 1 } })
  throw new Error(`unknown store kind ${store.kind}`)
}

let guard
let redis
let setup

/**
 * When each call's request left for the simulator (epoch ms, the moment undici wrote its body: the
 * arrivals a loopback without jitter delivers). The simulator stamps an arrival only when the test
 * process's loop reads it, late by varying amounts on a loaded machine that no guard can see.
 */
const wire = []
subscribe('undici:request:bodySent', ({ request }) => {
  if (request.method === 'POST' && request.path.endsWith('/chat/completions')) {
    wire.push(performance.timeOrigin + performance.now())
  }
})

process.on('message', (message) => {
  if (message.type === 'setup') {
    setup = message.setup
    redis = connect(setup.store)
    guard = createGuard({
      // One account unless the parent gives several (bench/scale.ts).
      upstream: {
        baseURL: setup.simUrl,
        accounts: setup.accounts ?? [{ id: 'acct-mp', apiKey: 'sk-mp' }],
        // The default (0.97) unless the parent sets one (bench/scale.ts --margin).
        ...(setup.safetyMargin === undefined ? {} : { safetyMargin: setup.safetyMargin }),
      },
      models: { [setup.model]: { rpm: setup.rpm, rps: setup.rps, tpm: 100_000_000, fallback: [] } },
      quotas: (identity) => ({ user: setup.quotas[identity.user] ?? setup.quotas['*'] }),
      store: { redis, prefix: setup.prefix },
      queue: { maxWaitMs: setup.maxWaitMs },
    })
    // Open a connection to the simulator before the start (a first connection is slow to set up).
    const key = setup.accounts?.[0]?.apiKey ?? 'sk-mp'
    void fetch(`${setup.simUrl}/models`, { headers: { authorization: `Bearer ${key}` } })
      .then((r) => r.text())
      .then(() => redis.ping())
      .then(() => process.send({ type: 'ready' }))
  } else if (message.type === 'start') {
    void run(message.startAt).then((result) => process.send({ type: 'done', result }))
  }
})

async function run(startAt) {
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())))
  const stopAt = startAt + setup.loadMs
  const users = {}
  const queuedMs = []
  guard.on('admitted', (event) => queuedMs.push(event.queuedMs))
  const loop = async (user) => {
    const tally = (users[user] ??= { admitted: 0, refused: {} })
    const client = guard.client({ user })
    while (Date.now() < stopAt) {
      try {
        await client.chat.completions.create({
          model: setup.model,
          messages: [{ role: 'user', content: `hello from ${user}` }],
          max_tokens: 8,
        })
        tally.admitted++
      } catch (error) {
        if (!isQwenGuardError(error)) throw error
        tally.refused[error.code] = (tally.refused[error.code] ?? 0) + 1
        // A user over its own quota keeps knocking (that is what must never over-admit), a little spaced.
        await new Promise((r) => setTimeout(r, Math.min(error.retryAfterMs, setup.retryPauseMs)))
      }
    }
  }
  await Promise.all(setup.loops.map((user) => loop(user)))
  await guard.close()
  redis.disconnect()
  return { users, queuedMs, wire }
}
