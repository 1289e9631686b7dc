/** answer-tokens.ts: what an answer visibly holds, from untrusted upstream data. */
import { describe, expect, it } from 'vitest'
import { shownBytesIn, shownIn } from '../src/answer-tokens.js'
import { estimateTextTokens } from '../src/estimate.js'

const texts = (...all: string[]) => ({
  tokens: all.reduce((n, t) => n + estimateTextTokens(t), 0),
  bytes: all.reduce((n, t) => n + Buffer.byteLength(t), 0),
})

describe('shownIn', () => {
  it('counts content, reasoning, tool-call names and arguments, and a legacy function_call', () => {
    const message = {
      content: 'The answer is forty-two.',
      reasoning_content: '让我想一想这个问题。',
      tool_calls: [
        { function: { name: 'save', arguments: '{"items":["a","b"]}' } },
        { function: { name: 'load', arguments: '{}' } },
      ],
      function_call: { name: 'legacy', arguments: '{"x":1}' },
    }
    expect(shownIn([{ message }], 'message')).toEqual(
      texts(
        message.content,
        message.reasoning_content,
        'save',
        '{"items":["a","b"]}',
        'load',
        '{}',
        'legacy',
        '{"x":1}',
      ),
    )
    expect(shownIn([{ delta: { tool_calls: [{ index: 0, function: { arguments: 'ment' } }] } }], 'delta')).toEqual(
      texts('ment'),
    )
    // The other part of a choice is not read.
    expect(shownIn([{ message }], 'delta')).toEqual({ tokens: 0, bytes: 0 })
    // The bytes alone (a JSON answer's settlement) are the same bytes.
    expect(shownBytesIn([{ message }], 'message')).toBe(shownIn([{ message }], 'message').bytes)
    expect(shownBytesIn([{ message }], 'delta')).toBe(0)
  })

  it.each([
    ['no choices', undefined],
    ['choices not a list', { 0: { message: { content: 'x' } } }],
    ['null choices and parts', [null, { message: null }, { message: { content: null, tool_calls: 'x' } }]],
    [
      'numbers and objects where text goes',
      [
        {
          message: {
            content: 12,
            reasoning_content: { a: 1 },
            tool_calls: [null, 3, { function: { arguments: 5, name: [] } }],
          },
        },
      ],
    ],
  ])('counts nothing for %s', (_name, choices) => {
    expect(shownIn(choices, 'message')).toEqual({ tokens: 0, bytes: 0 })
    expect(shownBytesIn(choices, 'message')).toBe(0)
  })
})
