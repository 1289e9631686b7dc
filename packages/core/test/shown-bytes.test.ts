/** shownBytesIn is exactly shownIn(...).bytes (the JSON settlement's floor under a claimed usage). */
import { describe, expect, it } from 'vitest'
import { shownBytesIn, shownIn } from '../src/answer-tokens.js'

const shapes: unknown[] = [
  undefined,
  null,
  {},
  [],
  [null, 1, 'x', { message: null }, { message: 'text' }],
  [{ message: { content: 'héllo 你好 🙂' } }],
  [{ message: { content: '', reasoning_content: 'thinking…' } }],
  [{ message: { content: 'a', function_call: { name: 'f', arguments: '{"x":1}' } } }],
  [{ message: { tool_calls: [null, { function: { name: 'g', arguments: '{"y":"ü"}' } }, { function: 'no' }] } }],
  [{ message: { content: 42, reasoning_content: ['x'] } }, { message: { content: 'second choice' } }],
  [{ delta: { content: 'delta only' } }],
]

describe('shownBytesIn', () => {
  it.each(shapes.map((s, i) => [i, s] as const))(
    'shape %i: the same bytes as shownIn, message and delta',
    (_i, choices) => {
      for (const part of ['message', 'delta'] as const)
        expect(shownBytesIn(choices, part)).toBe(shownIn(choices, part).bytes)
    },
  )

  it('counts UTF-8 bytes, not characters', () => {
    expect(shownBytesIn([{ message: { content: '🙂é' } }], 'message')).toBe(6)
  })
})
