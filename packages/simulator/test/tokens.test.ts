import { describe, expect, it } from 'vitest'
import { chatSeed, completionPieces } from '../src/completion.js'
import { countPromptTokens, countTextTokens } from '../src/tokens.js'

describe('counting rule', () => {
  it('counts English words, digits, punctuation runs and whitespace as documented', () => {
    expect(countTextTokens('Hello!')).toBe(2)
    expect(countTextTokens('Write a haiku about rate limits.')).toBe(7)
    expect(countTextTokens('internationalization')).toBe(3) // 20 letters -> ceil(20 / 8)
    expect(countTextTokens('2025')).toBe(4)
    expect(countTextTokens('a  b')).toBe(3) // a double space is a token, a single one is free
    expect(countTextTokens('a\nb')).toBe(3)
    expect(countTextTokens('')).toBe(0)
  })

  it('counts Chinese at 2/3 token per character, rounded up per text', () => {
    expect(countTextTokens('你好！')).toBe(2)
    expect(countTextTokens('你是谁？')).toBe(3)
    expect(countTextTokens('请用简单的语言解释')).toBe(6)
  })

  it('makes code denser than prose of the same length', () => {
    const code = 'if (x[i] > 0) { y += x[i]; }'
    const prose = 'the answer is yes and more'
    expect(code.length / countTextTokens(code)).toBeLessThan(3)
    expect(prose.length / countTextTokens(prose)).toBeGreaterThan(4)
  })

  it('counts one emoji as one token, not two UTF-16 units', () => {
    expect(countTextTokens('😀')).toBe(1)
  })

  it('adds 5 tokens per message and 3 for the reply (ChatML)', () => {
    const chat = [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: '你是谁？' },
    ]
    expect(countPromptTokens(chat)).toBe(7 + 3 + 2 * 5 + 3)
    expect(
      countPromptTokens([{ role: 'user', content: [{ type: 'text', text: 'Hello!' }, { type: 'image_url' }] }]),
    ).toBe(2 + 5 + 3)
  })
})

describe('completions', () => {
  it('have exactly N tokens under the counting rule', () => {
    for (const n of [1, 2, 3, 17, 64, 500]) {
      const pieces = completionPieces(12345, n)
      expect(pieces).toHaveLength(n)
      expect(countTextTokens(pieces.join(''))).toBe(n)
    }
  })

  it('depend on the chat only', () => {
    const a = chatSeed('qwen-plus', [{ role: 'user', content: 'hi' }])
    expect(chatSeed('qwen-plus', [{ role: 'user', content: 'hi' }])).toBe(a)
    expect(chatSeed('qwen-plus', [{ role: 'user', content: 'ho' }])).not.toBe(a)
    expect(chatSeed('qwen-max', [{ role: 'user', content: 'hi' }])).not.toBe(a)
    expect(completionPieces(a, 10)).toEqual(completionPieces(a, 10))
  })
})
