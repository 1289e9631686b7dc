import { readFileSync } from 'node:fs'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { QwenGuardConfigError, resolveOptions, validateQuotaPolicies, DEFAULT_BASE_URL } from '../src/options.js'
import type { GuardOptions } from '../src/types.js'

const KEY = 'sk-secret-0123456789'
const base: GuardOptions = { upstream: { apiKey: KEY } }
/** The two methods the guard's store calls on an ioredis client (a duck-typed stand-in; never connected). */
const redisLike = { call() {}, defineCommand() {} }
/** Options whose qwen-plus price has these `tiers`. */
const withTiers = (tiers: unknown) =>
  ({ ...base, models: { 'qwen-plus': { price: { inputPerMillion: 1, outputPerMillion: 1, tiers } } } }) as unknown

function configError(options: unknown): QwenGuardConfigError {
  try {
    resolveOptions(options as GuardOptions)
  } catch (err) {
    expect(err).toBeInstanceOf(QwenGuardConfigError)
    expect((err as Error).message).not.toContain('sk-secret')
    return err as QwenGuardConfigError
  }
  throw new Error('expected a QwenGuardConfigError')
}

describe('resolveOptions: defaults', () => {
  it('fills every default', () => {
    const o = resolveOptions(base)
    expect(o.baseURL).toBe(DEFAULT_BASE_URL)
    expect(o.accounts).toHaveLength(1)
    expect(o.accounts[0]!.id).toBe('default')
    expect(o.accounts[0]!.apiKeys).toEqual([KEY])
    expect(o.store).toEqual({ prefix: 'qg', onError: 'open', commandTimeoutMs: 500, leaseTtlMs: 30_000 })
    expect(o.queue).toEqual({ maxWaitMs: 10_000, maxSize: 1_000, waitForConcurrency: true })
    expect(o.upstream.safetyMargin).toBe(0.97)
    expect(o.upstream.timeoutMs).toBe(120_000)
    expect(o.upstream.maxAttempts).toBe(4)
    expect(o.upstream.disableMs).toBe(3_600_000)
    expect(o.upstream.rampUp).toEqual({ initialRps: 2, factor: 1.5 })
    expect(typeof o.upstream.post).toBe('function')
    expect(o.defaultMaxTokens).toBe(1_024)
    expect(o.estimator.countPromptTokens([{ role: 'user', content: 'Hello!' }])).toBe(10)
    expect([...o.allowedModels].sort()).toEqual(Object.keys(o.models).sort())
  })

  it('derives per-second limits from per-minute ones', () => {
    const m = resolveOptions(base).models['qwen-max']!
    expect(m).toMatchObject({ name: 'qwen-max', rpm: 120, tpm: 100_000, rps: 2, fallback: [] })
    expect(m.tps).toBeCloseTo(100_000 / 60)
  })

  it('has no quotas by default and a static policy is returned by the function', async () => {
    expect(await resolveOptions(base).quotas({ user: 'u' })).toEqual({})
    const o = resolveOptions({ ...base, quotas: { user: { rpm: 20, usdPerDay: 0.5 } } })
    expect(await o.quotas({ user: 'u' })).toEqual({ user: { rpm: 20, usdPerDay: 0.5 } })
  })

  it('strips a trailing slash from baseURL', () => {
    expect(
      resolveOptions({ upstream: { apiKey: KEY, baseURL: 'http://127.0.0.1:8080/compatible-mode/v1/' } }).baseURL,
    ).toBe('http://127.0.0.1:8080/compatible-mode/v1')
  })

  it('looks globalThis.fetch up per call: a replacement made after start-up is used', async () => {
    const o = resolveOptions(base)
    const original = globalThis.fetch
    globalThis.fetch = (async () => new Response('stubbed', { status: 201 })) as typeof fetch
    try {
      const init = { headers: {}, body: '{}', signal: new AbortController().signal }
      const response = await o.upstream.post('http://x.invalid', init)
      expect(response.status).toBe(201)
      expect(await response.text()).toBe('stubbed')
    } finally {
      globalThis.fetch = original
    }
  })

  it('accepts objects without a prototype or from another realm, and limits of 15 digits', () => {
    const policy = Object.assign(Object.create(null) as object, { rpm: 999_999_999_999_999 })
    const otherRealm = runInNewContext('({ tokensPerDay: 5, usdPerDay: 999999999 })') as object
    const o = resolveOptions({ ...base, quotas: { user: policy, key: otherRealm } })
    return expect(o.quotas({})).resolves.toEqual({
      user: { rpm: 999_999_999_999_999 },
      key: { tokensPerDay: 5, usdPerDay: 999_999_999 },
    })
  })

  it('accepts rampUp: false, queue zeros and a redis-like store', () => {
    const redis = redisLike as never
    const o = resolveOptions({
      upstream: { apiKey: KEY, rampUp: false },
      queue: { maxWaitMs: 0, maxSize: 0 },
      store: { redis, prefix: 'app', onError: 'closed' },
    })
    expect(o.upstream.rampUp).toBe(false)
    expect(o.queue).toEqual({ maxWaitMs: 0, maxSize: 0, waitForConcurrency: true })
    expect(o.store).toEqual({ redis, prefix: 'app', onError: 'closed', commandTimeoutMs: 500, leaseTtlMs: 30_000 })
  })
})

describe('resolveOptions: model tables', () => {
  it('merges overrides field by field and recomputes per-second defaults', () => {
    const o = resolveOptions({ ...base, models: { 'qwen3-max': { rpm: 1200, fallback: ['qwen-plus', 'qwen-flash'] } } })
    const m = o.models['qwen3-max']!
    expect(m.rpm).toBe(1200)
    expect(m.rps).toBe(20)
    expect(m.tpm).toBe(1_000_000)
    expect(m.price).toEqual({ inputPerMillion: 1.2, outputPerMillion: 6 })
    expect(m.fallback).toEqual(['qwen-plus', 'qwen-flash'])
  })

  it('adds a new model that gives rpm and tpm', () => {
    const o = resolveOptions({ ...base, models: { 'qwen-vl-max': { rpm: 60, tpm: 50_000 } } })
    expect(o.models['qwen-vl-max']).toMatchObject({
      rpm: 60,
      tpm: 50_000,
      rps: 1,
      contextWindow: 131_072,
      maxOutputTokens: 8_192,
    })
    expect(o.allowedModels.has('qwen-vl-max')).toBe(true)
  })

  it('gives each account the global table plus its own overrides', () => {
    const o = resolveOptions({
      upstream: {
        accounts: [
          { id: 'a', apiKeys: ['k1', 'k2'] },
          { id: 'b', apiKey: 'k3', models: { 'qwen3-max': { rpm: 3000 } } },
        ],
      },
      models: { 'qwen3-max': { tpm: 2_000_000 } },
    })
    expect(o.accounts.map((a) => a.id)).toEqual(['a', 'b'])
    expect(o.accounts[0]!.models['qwen3-max']).toMatchObject({ rpm: 600, tpm: 2_000_000, rps: 10 })
    expect(o.accounts[1]!.models['qwen3-max']).toMatchObject({ rpm: 3000, tpm: 2_000_000, rps: 50 })
    expect(o.accounts[1]!.apiKeys).toEqual(['k3'])
    // the global table is untouched by an account override
    expect(o.models['qwen3-max']!.rpm).toBe(600)
  })

  it('treats __proto__ as a plain model name', () => {
    const o = resolveOptions({ ...base, models: JSON.parse('{"__proto__": {"rpm": 5, "tpm": 50}}') })
    expect(o.models['__proto__' as string]).toMatchObject({ rpm: 5, tpm: 50 })
    expect(Object.keys(o.models)).toContain('__proto__')
  })

  it('allows fallback cycles between different models', () => {
    const o = resolveOptions({
      ...base,
      models: { 'qwen-plus': { fallback: ['qwen-flash'] }, 'qwen-flash': { fallback: ['qwen-plus'] } },
    })
    expect(o.models['qwen-flash']!.fallback).toEqual(['qwen-plus'])
  })

  it('does not let two resolutions share model objects', () => {
    const a = resolveOptions(base)
    a.models['qwen3-max']!.fallback.push('qwen-plus')
    expect(resolveOptions(base).models['qwen3-max']!.fallback).toEqual([])
  })
})

describe('resolveOptions: errors name the option', () => {
  it("docs/errors.md's examples are the messages thrown, word for word", () => {
    const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8')
    const block = /## Configuration errors[\s\S]*?```\n([\s\S]*?)```/.exec(doc)?.[1] ?? ''
    const documented = block.trim().split('\n')
    const thrown = [
      { upstream: { accounts: [{ id: 'a', apiKey: 'k' }, { id: 'b' }] } },
      { upstream: { apiKey: 'k' }, quotas: { user: { rpm: -1 } } },
      { upstream: { apiKey: 'k' }, models: { 'qwen3-max': { fallback: ['qwen-nope'] } } },
      { upstream: { apiKey: 'k' }, queus: {} },
    ].map((options) => {
      try {
        resolveOptions(options as unknown as GuardOptions)
      } catch (error) {
        return (error as Error).message
      }
      return 'no error'
    })
    expect(documented).toHaveLength(thrown.length)
    // The last example is cut short with "...": the message starts with what it shows.
    thrown.forEach((message, i) => expect(message.startsWith(documented[i]!.replace(/, \.\.\.\)$/, ''))).toBe(true))
  })

  it.each<[string, unknown, string]>([
    ['no upstream', {}, 'upstream: must be an object'],
    ['no API key', { upstream: {} }, 'upstream.apiKey: an API key is required'],
    [
      'an unset environment variable for the key',
      { upstream: { apiKey: undefined } },
      'upstream.apiKey: an API key is required (upstream.apiKey or upstream.accounts); got none: is the environment variable it is read from (DASHSCOPE_API_KEY) set?',
    ],
    ['empty accounts', { upstream: { accounts: [] } }, 'upstream.accounts: must be a non-empty array'],
    [
      'both apiKey and accounts',
      { upstream: { apiKey: KEY, accounts: [{ id: 'a', apiKey: 'x' }] } },
      'upstream: give either apiKey or accounts',
    ],
    [
      'account without keys',
      {
        upstream: {
          accounts: [
            { id: 'a', apiKeys: ['k'] },
            { id: 'b', apiKeys: [] },
          ],
        },
      },
      'upstream.accounts[1].apiKeys: at least one API key is required',
    ],
    [
      'account missing keys',
      { upstream: { accounts: [{ id: 'a' }] } },
      'upstream.accounts[0].apiKeys: at least one API key is required',
    ],
    [
      'empty key string',
      { upstream: { accounts: [{ id: 'a', apiKeys: ['k', ' '] }] } },
      'upstream.accounts[0].apiKeys[1]: must not be empty',
    ],
    ['empty apiKey', { upstream: { apiKey: '' } }, 'upstream.apiKey: must not be empty'],
    [
      'key with whitespace',
      { upstream: { apiKey: `${KEY}\n` } },
      'upstream.apiKey: must not start or end with whitespace',
    ],
    [
      'duplicate account id',
      {
        upstream: {
          accounts: [
            { id: 'a', apiKey: 'k1' },
            { id: 'a', apiKey: 'k2' },
          ],
        },
      },
      'upstream.accounts[1].id: duplicate account id "a"',
    ],
    [
      'same key on two accounts',
      {
        upstream: {
          accounts: [
            { id: 'a', apiKey: KEY },
            { id: 'b', apiKeys: ['x', KEY] },
          ],
        },
      },
      'upstream.accounts[1].apiKeys[1]: this key is already listed for account "a"',
    ],
    [
      'account id missing',
      { upstream: { accounts: [{ apiKey: 'k' }] } },
      'upstream.accounts[0].id: must be a non-empty string',
    ],
    [
      'bad baseURL',
      { upstream: { apiKey: KEY, baseURL: 'dashscope-intl.aliyuncs.com' } },
      'upstream.baseURL: must be an absolute http(s) URL',
    ],
    ['ftp baseURL', { upstream: { apiKey: KEY, baseURL: 'ftp://x/v1' } }, 'upstream.baseURL: must use http or https'],
    [
      'safetyMargin 0',
      { upstream: { apiKey: KEY, safetyMargin: 0 } },
      'upstream.safetyMargin: must be a number in (0, 1], got 0',
    ],
    [
      'safetyMargin 1.2',
      { upstream: { apiKey: KEY, safetyMargin: 1.2 } },
      'upstream.safetyMargin: must be a number in (0, 1], got 1.2',
    ],
    [
      'timeoutMs NaN',
      { upstream: { apiKey: KEY, timeoutMs: Number.NaN } },
      'upstream.timeoutMs: must be a positive number, got NaN',
    ],
    [
      'maxAttempts 1.5',
      { upstream: { apiKey: KEY, maxAttempts: 1.5 } },
      'upstream.maxAttempts: must be an integer, got 1.5',
    ],
    [
      'rampUp factor 1',
      { upstream: { apiKey: KEY, rampUp: { factor: 1 } } },
      'upstream.rampUp.factor: must be greater than 1',
    ],
    ['fetch not a function', { upstream: { apiKey: KEY, fetch: 'x' } }, 'upstream.fetch: must be a function'],
    [
      'negative user rpm',
      { ...base, quotas: { user: { rpm: -1 } } },
      'quotas.user.rpm: must be a non-negative integer, got -1',
    ],
    [
      'fractional key tpm',
      { ...base, quotas: { key: { tpm: 10.5 } } },
      'quotas.key.tpm: must be a non-negative integer, got 10.5',
    ],
    [
      'fractional concurrency',
      { ...base, quotas: { user: { concurrency: 1.5 } } },
      'quotas.user.concurrency: must be a non-negative integer, got 1.5',
    ],
    ['quota typo', { ...base, quotas: { user: { rmp: 5 } } }, 'quotas.user.rmp: unknown option'],
    ['quota scope typo', { ...base, quotas: { users: {} } }, 'quotas.users: unknown option'],
    ['quotas a number', { ...base, quotas: 5 }, 'quotas: must be an object, got 5'],
    [
      'unknown fallback',
      { ...base, models: { 'qwen3-max': { fallback: ['qwen-nope'] } } },
      'models.qwen3-max.fallback[0]: unknown model "qwen-nope"',
    ],
    [
      'self fallback',
      { ...base, models: { 'qwen3-max': { fallback: ['qwen-plus', 'qwen3-max'] } } },
      'models.qwen3-max.fallback[1]: a model cannot fall back to itself',
    ],
    [
      'duplicate fallback',
      { ...base, models: { 'qwen3-max': { fallback: ['qwen-plus', 'qwen-plus'] } } },
      'models.qwen3-max.fallback[1]: duplicate fallback',
    ],
    [
      'fallback to an inherited name',
      { ...base, models: { 'qwen3-max': { fallback: ['constructor'] } } },
      'models.qwen3-max.fallback[0]: unknown model "constructor"',
    ],
    [
      'model named like a prototype property',
      { ...base, models: { toString: { rpm: 1 } } },
      'models.toString.tpm: a model not in the built-in table must give tpm',
    ],
    [
      'new model without tpm',
      { ...base, models: { 'qwen-new': { rpm: 10 } } },
      'models.qwen-new.tpm: a model not in the built-in table must give tpm',
    ],
    [
      'new model without rpm',
      { ...base, models: { 'qwen-new': { tpm: 10 } } },
      'models.qwen-new.rpm: a model not in the built-in table must give rpm',
    ],
    [
      'model name with a space',
      { ...base, models: { 'qwen new': { rpm: 10, tpm: 10 } } },
      'models.qwen new: a model name is printable ASCII without spaces, got "qwen new"',
    ],
    [
      'model name with a line break',
      { ...base, models: { 'qwen\r\nx-evil': { rpm: 10, tpm: 10 } } },
      'models.qwen\r\nx-evil: a model name is printable ASCII without spaces, got "qwen\\r\\nx-evil"',
    ],
    [
      'negative model rpm',
      { ...base, models: { 'qwen-plus': { rpm: -5 } } },
      'models.qwen-plus.rpm: must be a positive number, got -5',
    ],
    ['model field typo', { ...base, models: { 'qwen-plus': { tmp: 5 } } }, 'models.qwen-plus.tmp: unknown option'],
    [
      'negative price',
      { ...base, models: { 'qwen-plus': { price: { inputPerMillion: -1, outputPerMillion: 1 } } } },
      'models.qwen-plus.price.inputPerMillion: must be a non-negative number',
    ],
    ['price tiers not a list', withTiers({}), 'models.qwen-plus.price.tiers: must be an array, got an object'],
    [
      'price tiers out of order',
      withTiers([
        { inputAbove: 128_000, inputPerMillion: 3, outputPerMillion: 15 },
        { inputAbove: 32_000, inputPerMillion: 2, outputPerMillion: 12 },
      ]),
      'models.qwen-plus.price.tiers[1].inputAbove: must be above the tier before it (128000), got 32000',
    ],
    [
      'price tier typo',
      withTiers([{ above: 32_000, inputPerMillion: 2, outputPerMillion: 12 }]),
      'models.qwen-plus.price.tiers[0].above: unknown option',
    ],
    [
      'account model unknown',
      { upstream: { accounts: [{ id: 'a', apiKey: 'k', models: { 'qwen-nope': { rpm: 5, tpm: 5 } } }] } },
      'upstream.accounts[0].models.qwen-nope: unknown model "qwen-nope"',
    ],
    [
      'account fallback to self',
      { upstream: { accounts: [{ id: 'a', apiKey: 'k', models: { 'qwen-plus': { fallback: ['qwen-plus'] } } }] } },
      'upstream.accounts[0].models.qwen-plus.fallback[0]: a model cannot fall back to itself',
    ],
    [
      'queue negative',
      { ...base, queue: { maxWaitMs: -1 } },
      'queue.maxWaitMs: must be a non-negative integer, got -1',
    ],
    [
      'queue size fraction',
      { ...base, queue: { maxSize: 2.5 } },
      'queue.maxSize: must be a non-negative integer, got 2.5',
    ],
    ['queue typo', { ...base, queue: { maxWait: 5 } }, 'queue.maxWait: unknown option'],
    ['store onError', { ...base, store: { onError: 'ignore' } }, "store.onError: must be 'open' or 'closed'"],
    ['store prefix with a brace', { ...base, store: { prefix: 'app{' } }, 'store.prefix: must not contain { or }'],
    [
      'store command timeout 0',
      { ...base, store: { commandTimeoutMs: 0 } },
      'store.commandTimeoutMs: must be a positive',
    ],
    [
      'store lease TTL fraction',
      { ...base, store: { leaseTtlMs: 10.5 } },
      'store.leaseTtlMs: must be an integer, got 10.5',
    ],
    [
      'queue waitForConcurrency',
      { ...base, queue: { waitForConcurrency: 'yes' as never } },
      'queue.waitForConcurrency: must be true or false, got "yes"',
    ],
    [
      'auto-pipelining Redis client',
      { ...base, store: { redis: { ...redisLike, options: { enableAutoPipelining: true } } as never } },
      'store.redis: an ioredis client with enableAutoPipelining is not supported',
    ],
    // Connection options or another library's client failed at the first command, deep in the store.
    ...(
      [
        ['connection options as the Redis client', { host: '127.0.0.1', port: 6379 }],
        ['an empty object as the Redis client', {}],
        ['a client without defineCommand', { call() {} }],
      ] as const
    ).map(([name, redis]): [string, unknown, string] => [
      name,
      { ...base, store: { redis } },
      'store.redis: must be an ioredis client (new Redis(url) or new Cluster(nodes))',
    ]),
    // The key is sent as `Authorization: Bearer <key>`: one that cannot be was a 502 on every call.
    ...(
      [
        ['a line break', 'sk-abc\ndef', 7, '000A'],
        ['a NUL', 'sk-abc\u0000def', 7, '0000'],
        ['a Cyrillic letter', 'sk-кey', 4, '043A'],
        ['a space inside', 'sk-abc def', 7, '0020'],
        ['a non-breaking space inside', 'sk-abc\u00a0def', 7, '00A0'],
      ] as const
    ).map(([what, key, at, code]): [string, unknown, string] => [
      `an API key with ${what}`,
      { upstream: { accounts: [{ id: 'a', apiKeys: ['sk-good', key] }] } },
      `upstream.accounts[0].apiKeys[1]: must be visible ASCII (it is sent in the Authorization header): character ${at} is U+${code}`,
    ]),
    // RFC 8941 integers carry 15 digits: 1e21 printed as `q=1e+21` in the RateLimit fields.
    [
      'a user rpm past 15 digits',
      { ...base, quotas: { user: { rpm: 1e21 } } },
      'quotas.user.rpm: must be at most 999,999,999,999,999, got 1e+21',
    ],
    [
      'a key tokensPerDay past 15 digits',
      { ...base, quotas: { key: { tokensPerDay: 1e300 } } },
      'quotas.key.tokensPerDay: must be at most 999,999,999,999,999',
    ],
    [
      'usdPerDay past a billion',
      { ...base, quotas: { user: { usdPerDay: 1e10 } } },
      'quotas.user.usdPerDay: must be at most 999,999,999, got 10000000000',
    ],
    [
      'a model tpm past 15 digits',
      { ...base, models: { 'qwen-plus': { tpm: 1e16 } } },
      'models.qwen-plus.tpm: must be at most 999,999,999,999,999',
    ],
    [
      'a model tps past 15 digits',
      { ...base, models: { 'qwen-plus': { tps: 1e16 } } },
      'models.qwen-plus.tps: must be at most 999,999,999,999,999',
    ],
    // A Map or an object with inherited fields: some checks read its fields, the key check does not.
    [
      'a Map as a policy',
      { ...base, quotas: { user: new Map([['rpm', 5]]) } },
      'quotas.user: must be a plain object ({ ... }), got a Map',
    ],
    [
      'a policy whose fields are inherited',
      { ...base, quotas: { user: Object.create({ rpm: 5 }) as object } },
      'quotas.user: must be a plain object ({ ... }), got an object with an inherited prototype',
    ],
    [
      'a class instance as the queue',
      { ...base, queue: new (class Queue {})() },
      'queue: must be a plain object ({ ... }), got a Queue',
    ],
    ['defaultMaxTokens 0', { ...base, defaultMaxTokens: 0 }, 'defaultMaxTokens: must be a positive number, got 0'],
    [
      'defaultMaxTokens fraction',
      { ...base, defaultMaxTokens: 100.5 },
      'defaultMaxTokens: must be an integer, got 100.5',
    ],
    [
      'allowedModels unknown',
      { ...base, allowedModels: ['qwen-plus', 'gpt-4o'] },
      'allowedModels[1]: unknown model "gpt-4o"',
    ],
    ['allowedModels empty', { ...base, allowedModels: [] }, 'allowedModels: must be a non-empty array'],
    ['estimator without method', { ...base, estimator: {} }, 'estimator.countPromptTokens: must be a function'],
    ['top-level typo', { ...base, quota: {} }, 'quota: unknown option'],
    ['upstream typo', { upstream: { apiKey: KEY, acounts: [] } }, 'upstream.acounts: unknown option'],
    [
      'account typo',
      { upstream: { accounts: [{ id: 'a', apikey: 'k' }] } },
      'upstream.accounts[0].apikey: unknown option',
    ],
    // Node's timers take at most 2^31 - 1 ms: a longer delay fired after 1 ms (every call a 504 at once).
    ...(
      [
        ['upstream.timeoutMs', { upstream: { apiKey: KEY, timeoutMs: 2 ** 31 } }],
        ['upstream.streamIdleMs', { upstream: { apiKey: KEY, streamIdleMs: 3e9 } }],
        ['upstream.maxRetryAfterMs', { upstream: { apiKey: KEY, maxRetryAfterMs: 3e9 } }],
        ['store.commandTimeoutMs', { ...base, store: { commandTimeoutMs: 3e9 } }],
        ['store.leaseTtlMs', { ...base, store: { leaseTtlMs: 7e9 } }],
        ['queue.maxWaitMs', { ...base, queue: { maxWaitMs: 3e9 } }],
      ] as const
    ).map(([path, options]): [string, unknown, string] => [
      `${path} past the longest timer`,
      options,
      `${path}: must be at most 2147483647 ms (about 24.8 days, the longest timer Node sets), got`,
    ]),
  ])('%s', (_name, options, message) => {
    const err = configError(options)
    expect(err.message.startsWith(message), err.message).toBe(true)
    expect(err.path).toBe(message.split(':')[0])
  })

  it('accepts top-level keys an adapter declares', () => {
    expect(() => resolveOptions({ ...base, identify: () => ({}) } as GuardOptions, ['identify'])).not.toThrow()
    expect(() => resolveOptions({ ...base, identify: () => ({}) } as GuardOptions)).toThrow(/identify: unknown option/)
  })
})

describe('quota functions', () => {
  it('validates what a quota function returns, at call time', async () => {
    const o = resolveOptions({
      ...base,
      quotas: (id) => (id.user === 'bad' ? { user: { rpm: -2 } } : { user: { rpm: 5 } }),
    })
    expect(await o.quotas({ user: 'good' })).toEqual({ user: { rpm: 5 } })
    await expect(o.quotas({ user: 'bad' })).rejects.toThrow(
      'quotas(identity).user.rpm: must be a non-negative integer, got -2',
    )
  })

  it('accepts async functions and treats undefined as no limits', async () => {
    const o = resolveOptions({ ...base, quotas: async () => undefined as never })
    expect(await o.quotas({})).toEqual({})
  })

  it('validateQuotaPolicies returns a clean copy', () => {
    const input = { user: { rpm: 5, tpm: undefined } }
    const out = validateQuotaPolicies(input, 'p')
    expect(out).toEqual({ user: { rpm: 5 } })
    expect(out.user).not.toBe(input.user)
    expect(() => validateQuotaPolicies({ key: { usdPerDay: -1 } }, 'tier.gold')).toThrow(
      'tier.gold.key.usdPerDay: must be a non-negative number, got -1',
    )
  })
})
