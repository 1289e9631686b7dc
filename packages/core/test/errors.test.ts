import OpenAI from 'openai'
import { describe, expect, it } from 'vitest'
import {
  GUARD_ERROR_STATUS,
  QwenGuardError,
  REFUSAL_RULES,
  concurrencyLimitExceeded,
  contentFilter,
  contextTooLong,
  defaultErrorType,
  invalidJson,
  invalidRequest,
  isQwenGuardError,
  modelNotFound,
  queueFull,
  quotaExceeded,
  quotaRefusalOf,
  rateLimitExceeded,
  requestTooLarge,
  storeUnavailable,
  unknownRoute,
  upstreamError,
  upstreamRejected,
  upstreamSaturated,
  upstreamTimeout,
  upstreamUnavailable,
  zeroLimit,
  type GuardErrorCode,
} from '../src/errors.js'
import type { QuotaState } from '../src/types.js'

const rpmState: QuotaState = {
  scope: 'user',
  dimension: 'rpm',
  limit: 20,
  remaining: 0,
  resetMs: 1500,
  windowSeconds: 60,
}

describe('QwenGuardError', () => {
  it('is an OpenAI APIError with the body fields the SDK exposes', () => {
    const err = new QwenGuardError({
      status: 429,
      code: 'rate_limit_exceeded',
      message: 'Too many requests.',
      scope: 'user',
      dimension: 'rpm',
      retryAfterMs: 1500,
    })
    expect(err).toBeInstanceOf(OpenAI.APIError)
    expect(err).toBeInstanceOf(Error)
    expect(err.name).toBe('QwenGuardError')
    expect(err.status).toBe(429)
    expect(err.code).toBe('rate_limit_exceeded')
    expect(err.type).toBe('rate_limit_error')
    expect(err.param).toBeNull()
    expect(err.error).toEqual({
      message: 'Too many requests.',
      type: 'rate_limit_error',
      code: 'rate_limit_exceeded',
      param: null,
    })
    expect(err.message).toContain('Too many requests.')
    expect(err.scope).toBe('user')
    expect(err.dimension).toBe('rpm')
    expect(err.retryAfterMs).toBe(1500)
    expect(err.retryable).toBe(true)
    expect(err.limits).toEqual([])
  })

  it('puts the answer headers on err.headers, like an SDK error from a real response', () => {
    const err = new QwenGuardError({
      status: 429,
      code: 'rate_limit_exceeded',
      message: 'x',
      scope: 'user',
      dimension: 'rpm',
      retryAfterMs: 1500,
      limits: [rpmState],
    })
    expect(err.headers.get('retry-after')).toBe('2')
    expect(err.headers.get('retry-after-ms')).toBe('1500')
    expect(err.headers.get('ratelimit')).toBe('"user-rpm";r=0;t=2')
  })

  it.each<[number, GuardErrorCode, boolean]>([
    [429, 'rate_limit_exceeded', true],
    [429, 'upstream_saturated', true],
    [429, 'queue_full', true],
    [429, 'concurrency_limit_exceeded', true],
    [429, 'quota_exceeded', false],
    [503, 'upstream_unavailable', true],
    [503, 'store_unavailable', true],
    [504, 'upstream_timeout', true],
    [502, 'upstream_error', false],
    [400, 'invalid_request', false],
    [400, 'content_filter', false],
    [413, 'request_too_large', false],
    [400, 'context_length_exceeded', false],
  ])('status %i code %s defaults retryable=%s', (status, code, retryable) => {
    expect(new QwenGuardError({ status, code, message: 'm', scope: 'request' }).retryable).toBe(retryable)
  })

  it('lets the thrower override retryable and type', () => {
    const err = new QwenGuardError({
      status: 429,
      code: 'rate_limit_exceeded',
      message: 'm',
      scope: 'key',
      retryable: false,
      type: 'requests',
    })
    expect(err.retryable).toBe(false)
    expect(err.type).toBe('requests')
    expect(err.toHttp().headers['x-should-retry']).toBe('false')
  })

  it('derives the OpenAI type from the status', () => {
    const type = (status: number, code: GuardErrorCode) =>
      new QwenGuardError({ status, code, message: 'm', scope: 'request' }).type
    expect(type(400, 'invalid_json')).toBe('invalid_request_error')
    expect(type(404, 'model_not_found')).toBe('invalid_request_error')
    expect(type(413, 'request_too_large')).toBe('invalid_request_error')
    expect(type(503, 'upstream_unavailable')).toBe('server_error')
    expect(type(504, 'upstream_timeout')).toBe('server_error')
  })

  it('never has a negative or fractional wait', () => {
    expect(
      new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream', retryAfterMs: -5 })
        .retryAfterMs,
    ).toBe(0)
    expect(
      new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream', retryAfterMs: Number.NaN })
        .retryAfterMs,
    ).toBe(0)
    expect(
      new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream', retryAfterMs: 10.2 })
        .retryAfterMs,
    ).toBe(11)
  })

  it('toHttp gives the status, headers and an OpenAI-shaped body', () => {
    const err = new QwenGuardError({
      status: 400,
      code: 'invalid_request',
      message: 'max_tokens is too large.',
      scope: 'request',
      param: 'max_tokens',
    })
    expect(err.toHttp()).toEqual({
      status: 400,
      headers: { 'x-should-retry': 'false' },
      body: {
        error: {
          message: 'max_tokens is too large.',
          type: 'invalid_request_error',
          code: 'invalid_request',
          param: 'max_tokens',
        },
      },
    })
  })

  it('has a default status for every code', () => {
    expect(Object.keys(GUARD_ERROR_STATUS).sort()).toHaveLength(15)
    expect(GUARD_ERROR_STATUS.request_too_large).toBe(413)
    expect(GUARD_ERROR_STATUS.model_not_found).toBe(404)
  })
})

describe('isQwenGuardError', () => {
  it('recognises ours and nothing else', () => {
    expect(
      isQwenGuardError(new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream' })),
    ).toBe(true)
    expect(isQwenGuardError(new Error('x'))).toBe(false)
    expect(isQwenGuardError(new OpenAI.APIError(429, undefined, 'x', new Headers()))).toBe(false)
    expect(isQwenGuardError({ name: 'QwenGuardError' })).toBe(false)
  })

  it('recognises one from a duplicate copy of the package by shape', () => {
    const foreign = Object.assign(new Error('x'), { name: 'QwenGuardError', toHttp: () => ({}) })
    expect(isQwenGuardError(foreign)).toBe(true)
  })
})

describe('named constructors (the one table of refusals)', () => {
  const limits = [rpmState]
  const quota = { scope: 'key' as const, dimension: 'rpm' as const, retryAfterMs: 1500, limits }
  type Row = [
    string,
    QwenGuardError,
    {
      status: number
      code: GuardErrorCode
      scope: string
      dimension?: string
      param: string | null
      retryable: boolean
      retryAfterMs: number
    },
  ]
  const rows: Row[] = [
    [
      'upstreamSaturated',
      upstreamSaturated('m', 'tpm', 2500),
      {
        status: 429,
        code: 'upstream_saturated',
        scope: 'upstream',
        dimension: 'tpm',
        param: null,
        retryable: true,
        retryAfterMs: 2500,
      },
    ],
    [
      'queueFull',
      queueFull('m', 700),
      {
        status: 429,
        code: 'queue_full',
        scope: 'upstream',
        dimension: 'queue',
        param: null,
        retryable: true,
        retryAfterMs: 700,
      },
    ],
    [
      'upstreamTimeout',
      upstreamTimeout('m', 1000),
      { status: 504, code: 'upstream_timeout', scope: 'upstream', param: null, retryable: true, retryAfterMs: 1000 },
    ],
    [
      'upstreamError',
      upstreamError('m', 1000),
      { status: 502, code: 'upstream_error', scope: 'upstream', param: null, retryable: true, retryAfterMs: 1000 },
    ],
    [
      'upstreamError not retryable',
      upstreamError('m', 0, false),
      { status: 502, code: 'upstream_error', scope: 'upstream', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'upstreamUnavailable',
      upstreamUnavailable('m', 3000),
      {
        status: 503,
        code: 'upstream_unavailable',
        scope: 'upstream',
        param: null,
        retryable: true,
        retryAfterMs: 3000,
      },
    ],
    [
      'upstreamRejected',
      upstreamRejected('m'),
      { status: 400, code: 'invalid_request', scope: 'upstream', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'contentFilter',
      contentFilter('m'),
      { status: 400, code: 'content_filter', scope: 'upstream', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'storeUnavailable',
      storeUnavailable('m', 1000),
      { status: 503, code: 'store_unavailable', scope: 'store', param: null, retryable: true, retryAfterMs: 1000 },
    ],
    [
      'invalidRequest',
      invalidRequest('m', 'max_tokens'),
      {
        status: 400,
        code: 'invalid_request',
        scope: 'request',
        param: 'max_tokens',
        retryable: false,
        retryAfterMs: 0,
      },
    ],
    [
      'invalidRequest without param',
      invalidRequest('m'),
      { status: 400, code: 'invalid_request', scope: 'request', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'invalidJson',
      invalidJson('m'),
      { status: 400, code: 'invalid_json', scope: 'request', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'unknownRoute',
      unknownRoute('m'),
      { status: 404, code: 'invalid_request', scope: 'request', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'requestTooLarge',
      requestTooLarge('m'),
      { status: 413, code: 'request_too_large', scope: 'request', param: null, retryable: false, retryAfterMs: 0 },
    ],
    [
      'requestTooLarge of a quota',
      requestTooLarge('m', { scope: 'user', dimension: 'tokensPerDay', limits }),
      {
        status: 413,
        code: 'request_too_large',
        scope: 'user',
        dimension: 'tokensPerDay',
        param: null,
        retryable: false,
        retryAfterMs: 0,
      },
    ],
    [
      'contextTooLong',
      contextTooLong('m'),
      {
        status: 400,
        code: 'context_length_exceeded',
        scope: 'request',
        dimension: 'context',
        param: 'messages',
        retryable: false,
        retryAfterMs: 0,
      },
    ],
    [
      'modelNotFound',
      modelNotFound('m'),
      { status: 404, code: 'model_not_found', scope: 'request', param: 'model', retryable: false, retryAfterMs: 0 },
    ],
    [
      'rateLimitExceeded',
      rateLimitExceeded('m', quota),
      {
        status: 429,
        code: 'rate_limit_exceeded',
        scope: 'key',
        dimension: 'rpm',
        param: null,
        retryable: true,
        retryAfterMs: 1500,
      },
    ],
    [
      'quotaExceeded',
      quotaExceeded('m', { ...quota, scope: 'user', dimension: 'usdPerDay' }),
      {
        status: 429,
        code: 'quota_exceeded',
        scope: 'user',
        dimension: 'usdPerDay',
        param: null,
        retryable: false,
        retryAfterMs: 1500,
      },
    ],
    [
      'concurrencyLimitExceeded',
      concurrencyLimitExceeded('m', { ...quota, dimension: 'concurrency' }),
      {
        status: 429,
        code: 'concurrency_limit_exceeded',
        scope: 'key',
        dimension: 'concurrency',
        param: null,
        retryable: true,
        retryAfterMs: 1500,
      },
    ],
    [
      'quotaRefusalOf',
      quotaRefusalOf('quota_exceeded', 'm', { ...quota, dimension: 'tokensPerDay' }),
      {
        status: 429,
        code: 'quota_exceeded',
        scope: 'key',
        dimension: 'tokensPerDay',
        param: null,
        retryable: false,
        retryAfterMs: 1500,
      },
    ],
    [
      'zeroLimit',
      zeroLimit('rate_limit_exceeded', 'm', { scope: 'user', dimension: 'rpm', limits }),
      {
        status: 429,
        code: 'rate_limit_exceeded',
        scope: 'user',
        dimension: 'rpm',
        param: null,
        retryable: false,
        retryAfterMs: 0,
      },
    ],
  ]

  it.each(rows)('%s sets status, code, scope, dimension, param, retryable and wait', (_name, err, want) => {
    expect(err).toBeInstanceOf(QwenGuardError)
    expect(err.status).toBe(want.status)
    expect(err.code).toBe(want.code)
    expect(err.scope).toBe(want.scope)
    expect(err.dimension).toBe(want.dimension)
    expect(err.param).toBe(want.param)
    expect(err.retryable).toBe(want.retryable)
    expect(err.retryAfterMs).toBe(want.retryAfterMs)
    expect(err.error).toEqual({ message: 'm', type: defaultErrorType(want.status), code: want.code, param: want.param })
  })

  it.each(rows)('%s carries the headers its answer has', (_name, err, want) => {
    const { headers } = err.toHttp()
    expect(Object.fromEntries(err.headers)).toEqual(headers)
    expect(headers['x-should-retry']).toBe(want.retryable ? undefined : 'false')
    if (want.retryAfterMs > 0) expect(headers['retry-after-ms']).toBe(String(want.retryAfterMs))
    else expect(headers['retry-after-ms']).toBeUndefined()
  })

  it('gives the quota state to the RateLimit headers', () => {
    expect(rateLimitExceeded('m', quota).headers.get('ratelimit')).toBe('"user-rpm";r=0;t=2')
    expect(requestTooLarge('m', { scope: 'user', dimension: 'tpm', limits }).limits).toEqual(limits)
  })

  it("names a rule for every constructor, each rule a known code with that code's default status or a stated one", () => {
    for (const [kind, rule] of Object.entries(REFUSAL_RULES)) {
      expect(GUARD_ERROR_STATUS[rule.code], kind).toBeDefined()
      if (kind !== 'unknownRoute') expect(rule.status, kind).toBe(GUARD_ERROR_STATUS[rule.code])
    }
    expect(rows.map(([name]) => name.split(' ')[0])).toEqual(expect.arrayContaining(Object.keys(REFUSAL_RULES)))
  })
})
