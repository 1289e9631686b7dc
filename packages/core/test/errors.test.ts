import OpenAI from 'openai'
import { describe, expect, it } from 'vitest'
import { GUARD_ERROR_STATUS, QwenGuardError, isQwenGuardError, type GuardErrorCode } from '../src/errors.js'
import type { QuotaState } from '../src/types.js'

const rpmState: QuotaState = { scope: 'user', dimension: 'rpm', limit: 20, remaining: 0, resetMs: 1500, windowSeconds: 60 }

describe('QwenGuardError', () => {
  it('is an OpenAI APIError with the body fields the SDK exposes', () => {
    const err = new QwenGuardError({ status: 429, code: 'rate_limit_exceeded', message: 'Too many requests.', scope: 'user', dimension: 'rpm', retryAfterMs: 1500 })
    expect(err).toBeInstanceOf(OpenAI.APIError)
    expect(err).toBeInstanceOf(Error)
    expect(err.name).toBe('QwenGuardError')
    expect(err.status).toBe(429)
    expect(err.code).toBe('rate_limit_exceeded')
    expect(err.type).toBe('rate_limit_error')
    expect(err.param).toBeNull()
    expect(err.error).toEqual({ message: 'Too many requests.', type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null })
    expect(err.message).toContain('Too many requests.')
    expect(err.scope).toBe('user')
    expect(err.dimension).toBe('rpm')
    expect(err.retryAfterMs).toBe(1500)
    expect(err.retryable).toBe(true)
    expect(err.limits).toEqual([])
  })

  it('puts the answer headers on err.headers, like an SDK error from a real response', () => {
    const err = new QwenGuardError({ status: 429, code: 'rate_limit_exceeded', message: 'x', scope: 'user', dimension: 'rpm', retryAfterMs: 1500, limits: [rpmState] })
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
    const err = new QwenGuardError({ status: 429, code: 'rate_limit_exceeded', message: 'm', scope: 'key', retryable: false, type: 'requests' })
    expect(err.retryable).toBe(false)
    expect(err.type).toBe('requests')
    expect(err.toHttp().headers['x-should-retry']).toBe('false')
  })

  it('derives the OpenAI type from the status', () => {
    const type = (status: number, code: GuardErrorCode) => new QwenGuardError({ status, code, message: 'm', scope: 'request' }).type
    expect(type(400, 'invalid_json')).toBe('invalid_request_error')
    expect(type(404, 'model_not_found')).toBe('invalid_request_error')
    expect(type(413, 'request_too_large')).toBe('invalid_request_error')
    expect(type(503, 'upstream_unavailable')).toBe('server_error')
    expect(type(504, 'upstream_timeout')).toBe('server_error')
  })

  it('never has a negative or fractional wait', () => {
    expect(new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream', retryAfterMs: -5 }).retryAfterMs).toBe(0)
    expect(new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream', retryAfterMs: Number.NaN }).retryAfterMs).toBe(0)
    expect(new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream', retryAfterMs: 10.2 }).retryAfterMs).toBe(11)
  })

  it('toHttp gives the status, headers and an OpenAI-shaped body', () => {
    const err = new QwenGuardError({ status: 400, code: 'invalid_request', message: 'max_tokens is too large.', scope: 'request', param: 'max_tokens' })
    expect(err.toHttp()).toEqual({
      status: 400,
      headers: { 'x-should-retry': 'false' },
      body: { error: { message: 'max_tokens is too large.', type: 'invalid_request_error', code: 'invalid_request', param: 'max_tokens' } },
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
    expect(isQwenGuardError(new QwenGuardError({ status: 429, code: 'queue_full', message: 'm', scope: 'upstream' }))).toBe(true)
    expect(isQwenGuardError(new Error('x'))).toBe(false)
    expect(isQwenGuardError(new OpenAI.APIError(429, undefined, 'x', new Headers()))).toBe(false)
    expect(isQwenGuardError({ name: 'QwenGuardError' })).toBe(false)
  })

  it('recognises one from a duplicate copy of the package by shape', () => {
    const foreign = Object.assign(new Error('x'), { name: 'QwenGuardError', toHttp: () => ({}) })
    expect(isQwenGuardError(foreign)).toBe(true)
  })
})
