/**
 * adoptGuard: what both adapters do with `qwenGuard(options | guard, adapterOptions)`. Adapter options
 * that would be ignored in silence (a bare function, a misspelled key) are refused at start-up: an
 * ignored `identify` would charge every call to the client address instead of the app's users.
 */
import { describe, expect, it } from 'vitest'
import { adoptGuard } from '../src/adopt-guard.js'
import { createGuard } from '../src/guard.js'
import { QwenGuardConfigError } from '../src/options.js'

const options = { upstream: { baseURL: 'http://127.0.0.1:9/compatible-mode/v1', apiKey: 'sk-x' } }
const byAddress = () => ({ user: '127.0.0.1' })

describe('adoptGuard', () => {
  const guard = createGuard(options)

  it("uses the app's identify given beside a guard", () => {
    const adopted = adoptGuard<string>(guard, { identify: (user) => ({ user }) }, byAddress)
    expect(adopted.custom).toBe(true)
    expect(adopted.owned).toBe(false)
    expect(adopted.identify('alice')).toEqual({ user: 'alice' })
  })

  it.each([
    [
      'a bare function',
      (user: string) => ({ user }),
      /adapterOptions: must be an object like \{ identify \} \(pass \{ identify: fn \}\), got function/,
    ],
    [
      'a misspelled key',
      { identfy: (user: string) => ({ user }) },
      /identfy: unknown adapter option \(expected 'identify'\)/,
    ],
    ['a non-function identify', { identify: 'user' }, /identify: must be a function, got string/],
    ['null', null, /adapterOptions: must be an object/],
  ])('refuses %s as adapter options with a QwenGuardConfigError', (_name, adapterOptions, message) => {
    const adopt = () => adoptGuard<string>(guard, adapterOptions as never, byAddress)
    expect(adopt).toThrow(QwenGuardConfigError)
    expect(adopt).toThrow(message)
  })

  it('refuses a non-function identify among guard options, and creates no guard', () => {
    expect(() => adoptGuard<string>({ ...options, identify: 'user' } as never, {}, byAddress)).toThrow(
      /identify: must be a function, got string/,
    )
  })

  it.each([undefined, null, 'sk-key', 42])('refuses %s as options with a config error, not a TypeError', (given) => {
    const adopt = () => adoptGuard<string>(given as never, {}, byAddress)
    expect(adopt).toThrow(QwenGuardConfigError)
    expect(adopt).toThrow(`options: must be an object, got ${given === null ? 'null' : typeof given}`)
  })

  it('takes identify from guard options when none is given beside them', async () => {
    const adopted = adoptGuard<string>({ ...options, identify: (user: string) => ({ user }) }, {}, byAddress)
    expect(adopted.owned).toBe(true)
    expect(adopted.identify('bob')).toEqual({ user: 'bob' })
    await adopted.guard.close()
  })
})
