/** answer-tokens.ts: what an answer visibly holds, from untrusted upstream data. */
import { describe, expect, it } from 'vitest'
import { shownTokensOf } from '../src/answer-tokens.js'
import { estimateTextTokens } from '../src/estimate.js'

const t = estimateTextTokens

describe('shownTokensOf', () => {
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
    expect(shownTokensOf([{ message }], 'message')).toBe(
      t(message.content) +
        t(message.reasoning_content) +
        t('save') +
        t('{"items":["a","b"]}') +
        t('load') +
        t('{}') +
        t('legacy') +
        t('{"x":1}'),
    )
    expect(shownTokensOf([{ delta: { tool_calls: [{ index: 0, function: { arguments: 'ment' } }] } }], 'delta')).toBe(
      t('ment'),
    )
    // The other part of a choice is not read.
    expect(shownTokensOf([{ message }], 'delta')).toBe(0)
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
    expect(shownTokensOf(choices, 'message')).toBe(0)
  })
})
