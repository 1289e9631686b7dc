/**
 * createNodeRelay on a real node:http server, the simulator as Qwen. The relay's answers themselves
 * are tested per framework in test/http-relay.test.ts ('node'); here: the mount, `next`, and an
 * `identify` that fails.
 */
import type { RequestListener } from 'node:http'
import { startSimulator, type Simulator } from '@qwen-guard/simulator'
import OpenAI from 'openai'
import { describe, expect, it } from 'vitest'
import { createGuard, createNodeRelay, type Guard } from '../src/index.js'
import { pathUnder, normalizePrefix } from '../src/relay-prefix.js'
import { closedAfterEach, listen } from '../../../test/http-support.js'

const KEY = 'sk-node-relay-secret-1234'
const opened = closedAfterEach()

async function setUp(): Promise<{ sim: Simulator; guard: Guard }> {
  const sim = await startSimulator({ accounts: [{ id: 'acct-node', keys: [KEY] }] })
  const guard = createGuard({
    upstream: { baseURL: sim.url, apiKey: KEY },
    quotas: { user: { rpm: 100, tpm: 100_000 } },
  })
  opened.push(sim, guard)
  return { sim, guard }
}

async function serve(listener: RequestListener): Promise<string> {
  const served = await listen(listener)
  opened.push(served)
  return served.url
}

const ask = { model: 'qwen-plus', messages: [{ role: 'user' as const, content: 'Hello there' }] }

describe('createNodeRelay', () => {
  it('answers under its prefix, hands every other URL to next, and charges the identity it is given', async () => {
    const { guard } = await setUp()
    const relay = createNodeRelay(guard, {
      prefix: '/api/v1/',
      identify: (req) => ({ user: String(req.headers['x-user']) }),
    })
    const url = await serve((req, res) => void relay(req, res, () => res.end(`app saw ${req.url}`)))

    const client = new OpenAI({
      baseURL: `${url}/api/v1`,
      apiKey: 'client',
      maxRetries: 0,
      defaultHeaders: { 'x-user': 'ann' },
    })
    const completion = await client.chat.completions.create(ask)
    expect(completion.choices[0]?.message.content).toEqual(expect.any(String))
    const stream = await client.chat.completions.create({ ...ask, stream: true })
    let chunks = 0
    for await (const chunk of stream) chunks += chunk.choices.length
    expect(chunks).toBeGreaterThan(0)
    const rpm = (await guard.state({ user: 'ann' })).find((state) => state.dimension === 'rpm')
    expect(rpm?.remaining).toBe(98)

    for (const path of ['/ask', '/api/v10/chat/completions', '/api', '/']) {
      expect(await (await fetch(`${url}${path}`)).text()).toBe(`app saw ${path}`)
    }
    const models = await fetch(`${url}/api/v1/models?x=1`)
    expect(((await models.json()) as { data: unknown[] }).data.length).toBeGreaterThan(0)
  })

  it('without next, a URL outside the prefix gets the relay 404 naming it', async () => {
    const { guard } = await setUp()
    const relay = createNodeRelay(guard)
    const url = await serve((req, res) => void relay(req, res))
    const answer = await fetch(`${url}/elsewhere?q=1`)
    expect(answer.status).toBe(404)
    expect(await answer.json()).toMatchObject({
      error: { code: 'not_found', message: expect.stringContaining('GET /elsewhere') as unknown },
    })
  })

  it('an identify that throws or rejects: a generic 500, onError told, nothing charged or sent upstream', async () => {
    const { sim, guard } = await setUp()
    const seen: unknown[] = []
    const failures = [
      () => {
        throw new Error(`lookup failed for ${KEY}`)
      },
      () => Promise.reject(new Error('session store down')),
    ]
    for (const identify of failures) {
      const relay = createNodeRelay(guard, { identify, onError: (error) => seen.push(error) })
      const url = await serve((req, res) => void relay(req, res))
      const answer = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(ask),
      })
      expect(answer.status).toBe(500)
      const text = await answer.text()
      expect(JSON.parse(text)).toMatchObject({ error: { code: 'internal_error', type: 'server_error' } })
      expect(text).not.toContain(KEY)
    }
    expect(seen.map((error) => (error as Error).message)).toEqual([`lookup failed for ${KEY}`, 'session store down'])
    expect(sim.stats().calls).toBe(0)
  })
})

describe('relay prefixes', () => {
  it('normalises a prefix and finds the path below it, query string kept', () => {
    expect(['/v1', '/v1/', 'v1', 'v1//'].map(normalizePrefix)).toEqual(['/v1', '/v1', '/v1', '/v1'])
    expect(['', '/', '//'].map(normalizePrefix)).toEqual(['', '', ''])
    expect(pathUnder('/v1', '/v1/chat/completions?a=1')).toBe('/chat/completions?a=1')
    expect(pathUnder('/v1', '/v1')).toBe('/')
    expect(pathUnder('/v1', '/v1?a=1')).toBe('/?a=1')
    expect(pathUnder('/v1', '/v1/')).toBe('/')
    expect(pathUnder('/v1', '/v10/models')).toBeUndefined()
    expect(pathUnder('/v1', '/x/v1/models')).toBeUndefined()
    expect(pathUnder('/v1', '/x?/v1/models')).toBeUndefined()
    expect(pathUnder('', '/models?a=1')).toBe('/models?a=1')
  })
})
