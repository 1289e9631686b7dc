/**
 * An async `identify` that settles only after the client went away: the relay's client-gone signal is
 * made after the middleware waited for `identify`, when the response's 'close' event is already
 * past. It now aborts at once (client-gone.ts), so nothing is sent upstream or charged for the
 * departed client, and reading its destroyed body is not reported to `onError` as an unexpected error
 * (ECONNRESET 'aborted'). Found by an attack on 037f1af.
 */
import type { RequestListener } from 'node:http'
import { connect } from 'node:net'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import express from 'express'
import Koa from 'koa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from './support/listen.js'
import { createGuard, type Guard, type GuardEvent, type Identity } from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'

const SECRET = 'sk-attack-late-9e27'
let sim: Simulator
let guard: Guard
const settled: GuardEvent[] = []
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => void unhandled.push(reason)

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  sim = await startSimulator({ accounts: [{ id: 'acct-attack-late', keys: [SECRET] }] })
  guard = createGuard({ upstream: { baseURL: sim.url, apiKey: SECRET, rampUp: false }, quotas: { user: { rpm: 100 } } })
  guard.on('settled', (event) => void settled.push(event))
})
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await guard?.close()
  await sim?.close()
})

const serve = listen

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const body = JSON.stringify({ model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 })

/** Sends a whole chat completion on a raw socket, then leaves before any answer. */
async function sendAndLeave(port: number): Promise<void> {
  const socket = connect(port, '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  )
  await delay(30)
  socket.destroy()
}

/** An identify that settles 150 ms after it is asked; `done` resolves once it has. */
function lateIdentify(outcome: 'resolve' | 'reject') {
  let markDone!: () => void
  const done = new Promise<void>((resolve) => (markDone = resolve))
  const identify = async (): Promise<Identity> => {
    await delay(150)
    markDone()
    if (outcome === 'reject') throw new Error('session store timed out')
    return { user: 'late-user' }
  }
  return { identify, done }
}

const isClientGone = (error: unknown) => (error as { code?: unknown } | null)?.code === 'ECONNRESET'

describe('an identify that settles after the client left', () => {
  it('Express, body already parsed: nothing is sent upstream or charged for the departed client', async () => {
    const { identify, done } = lateIdentify('resolve')
    const errors: unknown[] = []
    const guardMw = expressGuard(guard, { identify })
    const app = express()
      .use(express.json())
      .use(guardMw)
      .use('/v1', guardMw.proxy({ onError: (error) => void errors.push(error) }))
    const server = await serve(app)
    const calls = sim.stats().calls
    settled.length = 0
    try {
      await sendAndLeave(server.port)
      await done
      await delay(300) // time for a call, had one been made (the simulator answers in a few ms)
      expect(sim.stats().calls).toBe(calls)
      expect(settled.filter((e) => e.type === 'settled' && e.identity.user === 'late-user')).toEqual([])
    } finally {
      await server.close()
    }
    expect(unhandled).toEqual([])
  })

  const relays: Record<
    string,
    (identify: () => Promise<Identity>, onError: (error: unknown) => void) => RequestListener
  > = {
    Express: (identify, onError) => {
      const guardMw = expressGuard(guard, { identify })
      return express().use(guardMw).use('/v1', guardMw.proxy({ onError }))
    },
    Koa: (identify, onError) => {
      const guardMw = koaGuard(guard, { identify })
      const app = new Koa()
      app.silent = true
      app.use(guardMw).use(guardMw.proxy({ prefix: '/v1', onError }))
      return app.callback()
    },
  }

  for (const outcome of ['resolve', 'reject'] as const) {
    it.each(Object.keys(relays))(
      `%s relay, identify ${outcome}s late: the client's departure is not reported to onError as an unexpected error`,
      async (framework) => {
        const { identify, done } = lateIdentify(outcome)
        const errors: unknown[] = []
        const server = await serve(relays[framework]!(identify, (error) => void errors.push(error)))
        try {
          await sendAndLeave(server.port)
          await done
          await delay(200)
          expect(errors.filter(isClientGone)).toEqual([])
        } finally {
          await server.close()
        }
        expect(unhandled).toEqual([])
      },
    )
  }
})
