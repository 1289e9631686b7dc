/**
 * The behavioural suite an app outside the workspace runs against the INSTALLED tarballs, once under
 * `import` (app.mjs) and once under `require` (app.cjs). It loads every package through the `load`
 * it is given, so each format exercises its own build (dist/*.js or dist/*.cjs). Talks to a simulator
 * (from the installed simulator tarball) on loopback. Each section runs even if an earlier one failed.
 * Prints one JSON line: { format, resolved, exports, estimates (estimates.cjs: the test compares them
 * with src/'s), checks (passed sections), failures (the others, with the reason) }; the app exits 1
 * when a section failed.
 */
'use strict'
const assert = require('node:assert/strict')
const { estimates } = require('./estimates.cjs')

const MODEL = 'qwen-plus'
const ask = (content) => ({ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content }] })

/** ESM namespaces carry the CommonJS-style default on `.default`; a `require` gives it directly. */
const defaultOf = (format, mod) => (format === 'esm' ? mod.default : mod)

async function run(format, load, resolve) {
  const checks = []
  const failures = []
  /** Each section runs even when an earlier one failed, so one run shows every broken kind. */
  const section = async (name, body) => {
    try {
      await body()
      checks.push(name)
    } catch (err) {
      failures.push(`${name}: ${err && err.stack ? err.stack : err}`)
    }
  }
  const core = await load('@qwen-guard/core')
  const expressAdapter = await load('@qwen-guard/express')
  const koaAdapter = await load('@qwen-guard/koa')
  const simulator = await load('@qwen-guard/simulator')
  const openaiModule = await load('openai')
  const OpenAI = defaultOf(format, openaiModule) // what the app itself writes: `new OpenAI()`, `OpenAI.APIError`
  const express = defaultOf(format, await load('express'))
  const Koa = defaultOf(format, await load('koa'))

  const resolved = Object.fromEntries(
    ['@qwen-guard/core', '@qwen-guard/express', '@qwen-guard/koa', '@qwen-guard/simulator'].map((n) => [n, resolve(n)]),
  )
  const exported = {
    core: Object.keys(core)
      .filter((k) => k !== 'default')
      .sort(),
    express: Object.keys(expressAdapter)
      .filter((k) => k !== 'default')
      .sort(),
    koa: Object.keys(koaAdapter)
      .filter((k) => k !== 'default')
      .sort(),
    simulator: Object.keys(simulator)
      .filter((k) => k !== 'default')
      .sort(),
  }

  const sim = await simulator.startSimulator({ port: 0 })
  const upstream = { baseURL: sim.url, apiKey: 'sk-sim' }
  const servers = []
  const listen = (handler) =>
    new Promise((res) => {
      const server = require('node:http')
        .createServer(handler)
        .listen(0, '127.0.0.1', () => {
          servers.push(server)
          res(`http://127.0.0.1:${server.address().port}`)
        })
    })

  try {
    // --- core: guard.client() under a user quota of 1 request per second.
    await section('core client refusal', async () => {
      const guard = core.createGuard({ upstream, quotas: { user: { rps: 1 } } })
      const client = guard.client({ user: 'u' })
      assert.ok(client instanceof openaiModule.OpenAI, "guard.client() is an instance of the app's own OpenAI class")
      const first = await client.chat.completions.create(ask('one'))
      assert.equal(first.object, 'chat.completion')
      const refusal = await client.chat.completions.create(ask('two')).then(
        () => assert.fail('the second call in the same second was admitted'),
        (err) => err,
      )
      assert.equal(
        core.isQwenGuardError(refusal),
        true,
        `a refusal is a QwenGuardError, got ${refusal && refusal.constructor && refusal.constructor.name}: ${refusal && refusal.message}`,
      )
      assert.ok(refusal instanceof core.QwenGuardError)
      assert.ok(refusal instanceof OpenAI.APIError, "a refusal is an instance of the app's OpenAI.APIError")
      assert.equal(refusal.status, 429)
      assert.equal(refusal.code, 'rate_limit_exceeded')
      assert.equal(refusal.scope, 'user')
      assert.equal(refusal.dimension, 'rps')
      assert.ok(refusal.retryAfterMs > 0 && refusal.retryAfterMs <= 1000, `retryAfterMs ${refusal.retryAfterMs}`)
      await guard.close()
    })

    // An HTTP refusal: 429, every header, an OpenAI-shaped JSON body, nothing of a stack or a page.
    const assertRefusalAnswer = async (response, where) => {
      const text = await response.text()
      assert.equal(response.status, 429, `${where}: status ${response.status}: ${text.slice(0, 200)}`)
      assert.match(response.headers.get('retry-after') ?? '', /^[1-9]\d*$/, `${where}: Retry-After`)
      assert.match(response.headers.get('retry-after-ms') ?? '', /^\d+$/, `${where}: retry-after-ms`)
      assert.match(response.headers.get('ratelimit-policy') ?? '', /"user-rps";q=1/, `${where}: RateLimit-Policy`)
      assert.match(response.headers.get('ratelimit') ?? '', /"user-rps";r=0;t=\d+/, `${where}: RateLimit`)
      assert.match(response.headers.get('content-type') ?? '', /^application\/json/, `${where}: content-type`)
      assert.doesNotMatch(
        text,
        /<html|<pre|\bat \S+ \(|node_modules|\/dist\//i,
        `${where}: no page, no stack, no paths`,
      )
      const body = JSON.parse(text)
      assert.deepEqual(Object.keys(body), ['error'])
      assert.equal(body.error.code, 'rate_limit_exceeded')
      assert.equal(body.error.type, 'rate_limit_error')
      assert.ok('param' in body.error && typeof body.error.message === 'string')
    }

    // --- metrics on, prom-client not installed (an optional peer this app did not add): a clear 500
    // naming what to install, from the core handler and the Express adapter's route; no path, no stack.
    await section('metrics without prom-client', async () => {
      const xm = expressAdapter.qwenGuard({ upstream, metrics: true })
      const murl = await listen(express().get('/metrics', xm.metrics()))
      const answer = await fetch(`${murl}/metrics`)
      const text = await answer.text()
      assert.equal(answer.status, 500, text)
      assert.match(text, /npm install prom-client/)
      assert.doesNotMatch(text, /Require stack|node_modules|\/[a-z]+\/|\bat \S+ \(/i, 'no path, no stack')
      await assert.rejects(xm.guard.metrics().scrape(), /prom-client/)
      await xm.close()
    })

    // --- Express: req.qwen, guard.errors, the relay. One user per header so the routes do not share a quota.
    const xg = expressAdapter.qwenGuard({
      upstream,
      quotas: { user: { rps: 1 } },
      identify: (req) => ({ user: req.get('x-user') }),
    })
    const app = express()
    app.use(xg)
    app.get('/ask', async (req, res) => {
      const answer = await req.qwen.chat.completions.create(ask(String(req.query.q)))
      res.json({ text: answer.choices[0].message.content })
    })
    app.use('/v1', xg.proxy())
    app.use(xg.errors)
    const xurl = await listen(app)
    await section('express req.qwen refusal answer', async () => {
      const headers = { 'x-user': 'ask' }
      assert.equal((await fetch(`${xurl}/ask?q=1`, { headers })).status, 200)
      await assertRefusalAnswer(await fetch(`${xurl}/ask?q=2`, { headers }), 'express req.qwen')
    })

    await section('express relay answers the openai SDK', async () => {
      const relayClient = new OpenAI({
        baseURL: `${xurl}/v1`,
        apiKey: 'unused',
        maxRetries: 0,
        defaultHeaders: { 'x-user': 'relay' },
      })
      const relayed = await relayClient.chat.completions.create(ask('relay'))
      assert.equal(relayed.choices[0].message.role, 'assistant')
      const relayRefusal = await relayClient.chat.completions.create(ask('relay 2')).then(
        () => assert.fail('the relay admitted a call over the quota'),
        (err) => err,
      )
      assert.ok(
        relayRefusal instanceof OpenAI.RateLimitError,
        `the SDK sees a RateLimitError, got ${relayRefusal && relayRefusal.constructor.name}`,
      )
      assert.match(relayRefusal.headers.get('retry-after-ms') ?? '', /^\d+$/)
    })
    await xg.close()

    // --- Koa: ctx.qwen; a refusal thrown below the middleware keeps every header.
    const kg = koaAdapter.qwenGuard({ upstream, quotas: { user: { rps: 1 } } })
    const koa = new Koa()
    koa.use(kg)
    koa.use(kg.proxy({ prefix: '/v1' }))
    koa.use(async (ctx) => {
      const answer = await ctx.qwen.chat.completions.create(ask(String(ctx.query.q)))
      ctx.body = { text: answer.choices[0].message.content }
    })
    const kurl = await listen(koa.callback())
    await section('koa ctx.qwen refusal answer', async () => {
      assert.equal((await fetch(`${kurl}/ask?q=1`)).status, 200)
      await assertRefusalAnswer(await fetch(`${kurl}/ask?q=2`), 'koa ctx.qwen')
    })
    await new Promise((r) => setTimeout(r, 1100)) // the user's second is over
    await section('koa relay answers the openai SDK', async () => {
      const koaRelay = new OpenAI({ baseURL: `${kurl}/v1`, apiKey: 'unused', maxRetries: 0 })
      const stream = await koaRelay.chat.completions.create({ ...ask('koa relay stream'), stream: true })
      let streamed = ''
      for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? ''
      assert.ok(streamed.length > 0, 'the relay streamed content')
    })
    await kg.close()
  } finally {
    for (const server of servers) server.close()
    await sim.close()
  }
  return { format, resolved, exports: exported, estimates: estimates(core), checks, failures }
}

module.exports = { run }
