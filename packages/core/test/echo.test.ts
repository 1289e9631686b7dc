/** echo.ts: a request's value in an error message, its type visible, never throwing. */
import { describe, expect, it } from 'vitest'
import { echo } from '../src/echo.js'
import { validateChatRequest } from '../src/validate.js'
import { resolveOptions } from '../src/options.js'

describe('echo', () => {
  it.each([
    ['10', '"10"'],
    [10, '10'],
    [Number.NaN, 'NaN'],
    [true, 'true'],
    [null, 'null'],
    [undefined, 'undefined'],
    [{ a: 1 }, '{"a":1}'],
    [[1, 'x'], '[1,"x"]'],
    [10n, 'bigint'],
    ['line\r\nbreak', '"line\\r\\nbreak"'],
    ['x'.repeat(100), `"${'x'.repeat(64)}…"`],
    [{ long: 'y'.repeat(100) }, `{"long":"${'y'.repeat(55)}…`],
  ])('echoes %o as %s', (value, text) => {
    expect(echo(value)).toBe(text)
  })

  it('echoes a cycle as its type', () => {
    const cycle: Record<string, unknown> = {}
    cycle.self = cycle
    expect(echo(cycle)).toBe('object')
  })

  it('lets a 400 tell a number from a string', () => {
    const options = resolveOptions({ upstream: { apiKey: 'sk-x' } })
    const messages = [{ role: 'user', content: 'hi' }]
    const messageOf = (body: Record<string, unknown>) => {
      try {
        validateChatRequest({ model: 'qwen-plus', messages, ...body }, options)
      } catch (error) {
        return (error as Error).message
      }
      return 'accepted'
    }
    expect(messageOf({ temperature: 9 })).toMatch(/got 9\.$/)
    expect(messageOf({ temperature: '9' })).toMatch(/got "9"\.$/)
    expect(messageOf({ max_tokens: '10' })).toMatch(/max_tokens must be a positive integer, got "10"\.$/)
    expect(messageOf({ max_tokens: 2.5 })).toMatch(/max_tokens must be a positive integer, got 2\.5\.$/)
  })
})
