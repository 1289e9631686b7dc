/**
 * Every relay checks its options at setup, one way (relay.ts, `checkRelayOptions`): Express's and
 * Koa's `guard.proxy()`, `createNodeRelay` and `createRelay`. A new-user attack on 27d1e62 found
 * `proxy({ prefx: '/api' })` accepted in silence (the relay stayed at '/v1') where the guard's own
 * options refuse unknown keys at every level.
 */
import { describe, expect, it } from 'vitest'
import {
  createGuard,
  createNodeRelay,
  createRelay,
  QwenGuardConfigError,
  type Guard,
} from '../packages/core/src/index.js'
import { qwenGuard as expressGuard } from '../packages/express/src/index.js'
import { qwenGuard as koaGuard } from '../packages/koa/src/index.js'

const options = { upstream: { apiKey: 'sk-relay-options', baseURL: 'http://127.0.0.1:9/v1' } }

/** Each relay maker, the name its errors use, and whether it takes `prefix` / `identify`. */
const makers: Array<{ name: string; where: string; prefix: boolean; identify: boolean; make(o: unknown): unknown }> = [
  {
    name: 'Express guard.proxy()',
    where: 'proxy',
    prefix: false,
    identify: false,
    make: (o) => expressGuard(options).proxy(o as never),
  },
  {
    name: 'Koa guard.proxy()',
    where: 'proxy',
    prefix: true,
    identify: false,
    make: (o) => koaGuard(options).proxy(o as never),
  },
  {
    name: 'createNodeRelay',
    where: 'createNodeRelay',
    prefix: true,
    identify: true,
    make: (o) => createNodeRelay(guard(), o as never),
  },
  {
    name: 'createRelay',
    where: 'createRelay',
    prefix: false,
    identify: false,
    make: (o) => createRelay(guard(), o as never),
  },
]
let shared: Guard | undefined
const guard = () => (shared ??= createGuard(options))

/** The QwenGuardConfigError `make(o)` throws, or a failure naming what it did instead. */
function configError(make: () => unknown): QwenGuardConfigError {
  try {
    make()
  } catch (error) {
    expect(error).toBeInstanceOf(QwenGuardConfigError)
    return error as QwenGuardConfigError
  }
  throw new Error('accepted')
}

describe.each(makers)('$name', ({ where, prefix, identify, make }) => {
  const expected = ['maxBodyBytes', 'onError', ...(prefix ? ['prefix'] : []), ...(identify ? ['identify'] : [])]

  it('refuses a misspelled option, naming it and the ones it takes', () => {
    const error = configError(() => make({ prefx: '/api' }))
    expect(error.path).toBe(`${where}.prefx`)
    expect(error.message).toBe(`${where}.prefx: unknown option (expected one of: ${expected.join(', ')})`)
  })

  it.each([
    ['maxBodyBytes', 0, 'must be a positive integer (bytes), got 0'],
    ['maxBodyBytes', 1.5, 'must be a positive integer (bytes), got 1.5'],
    ['maxBodyBytes', '1mb', 'must be a positive integer (bytes), got 1mb'],
    ['onError', 'log', 'must be a function, got string'],
  ])('refuses %s = %j', (key, value, reason) => {
    expect(configError(() => make({ [key]: value })).message).toBe(`${where}.${key}: ${reason}`)
  })

  it('refuses options that are not an object', () => {
    expect(configError(() => make('/v1')).message).toBe(`${where}: options must be an object, got string`)
  })

  it('accepts what it takes', () => {
    const given: Record<string, unknown> = { maxBodyBytes: 1024, onError: () => undefined }
    if (prefix) given.prefix = '/api'
    if (identify) given.identify = () => ({ user: 'u' })
    expect(typeof make(given)).toBe('function')
    expect(typeof make(undefined)).toBe('function')
    if (prefix) expect(configError(() => make({ prefix: 1 })).message).toMatch(`${where}.prefix: must be a string`)
    if (identify)
      expect(configError(() => make({ identify: 'u' })).message).toBe(
        `${where}.identify: must be a function, got string`,
      )
  })
})
