/**
 * guard.errors and a ClientGoneError: quiet only when this request's own client went away. A client
 * kept across requests (an app caching req.qwen) fails on another request's departure; an app error
 * may wrap one as its cause: the client still waiting gets an answer. And a request that makes
 * several clients (a later req.qwenIdentity) follows its client with one listener.
 */
import express from 'express'
import type OpenAI from 'openai'
import { describe, expect, it } from 'vitest'
import { getStatus, listen, simulatorGuardForFile, streamedText } from '../../../test/http-support.js'
import { qwenGuard } from '../src/index.js'

const messages = [{ role: 'user' as const, content: 'Hello there' }]
const core = simulatorGuardForFile()

describe('guard.errors and a ClientGoneError from another request', () => {
  it('answers a request whose own client is still connected, even when the ClientGoneError came from another request', async () => {
    const guard = qwenGuard(core())
    let cached: OpenAI | undefined
    let seen = ''
    const app = express()
      .use(guard)
      .get('/a', async (req, res) => {
        cached = req.qwen // an app keeping the client (or sharing an in-flight call) across requests
        await new Promise((r) => setTimeout(r, 300))
        res.send('a')
      })
      .get('/b', async (_req, res, next) => {
        try {
          const text = await streamedText(cached!, messages)
          res.json({ text })
        } catch (error) {
          seen = `${(error as Error).name}/${((error as Error).cause as Error | undefined)?.name}`
          next(error) // B's own client is still here: it must get an answer (500 at worst)
        }
      })
      .use(guard.errors)
    const { url, close } = await listen(app)
    try {
      await getStatus(`${url}/a`, { abortAfterMs: 50 }) // A's client leaves before its answer
      await new Promise((r) => setTimeout(r, 100))
      const b = await getStatus(`${url}/b`)
      expect(seen).toMatch(/ClientGoneError/) // B's call failed because A's client left
      expect(b).toBeTypeOf('number') // it was 'request error: socket hang up' (res.destroy(), nothing logged)
    } finally {
      await close()
    }
  })

  it('answers an app error that wraps a ClientGoneError as cause when this request is still connected', async () => {
    const guard = qwenGuard(core())
    const app = express()
      .use(guard)
      .get('/c', (_req, _res, next) => {
        // e.g. a job queue's result, shared between callers, that failed for another caller
        const gone = new Error('The client went away before its answer was finished.')
        gone.name = 'ClientGoneError'
        next(new Error('summary job failed', { cause: gone }))
      })
      .use(guard.errors)
    const { url, close } = await listen(app)
    try {
      expect(await getStatus(`${url}/c`)).toBe(500) // it was: socket hang up
    } finally {
      await close()
    }
  })
})

describe('one client-gone listener per request, however many clients it builds', () => {
  it('does not add a res close listener per req.qwen rebuilt after reassigning req.qwenIdentity (batch route, 12 owners)', async () => {
    const guard = qwenGuard(core())
    const warnings: string[] = []
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`)
    process.on('warning', onWarning)
    let before = 0
    let after = 0
    const app = express()
      .use(guard)
      .get('/batch', (req, res) => {
        before = res.listenerCount('close')
        for (let i = 0; i < 12; i++) {
          req.qwenIdentity = { user: `owner-${i}` }
          void req.qwen // each item charged to its owner
        }
        after = res.listenerCount('close')
        res.send('ok')
      })
    const { url, close } = await listen(app)
    try {
      expect(await getStatus(`${url}/batch`)).toBe(200)
      await new Promise((r) => setTimeout(r, 50))
      expect(after - before).toBeLessThanOrEqual(1) // it was 12
      expect(warnings.filter((w) => w.includes('MaxListenersExceeded'))).toEqual([])
    } finally {
      process.off('warning', onWarning)
      await close()
    }
  })
})
