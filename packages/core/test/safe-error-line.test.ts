import { describe, expect, it, vi } from 'vitest'
import { createGuard, createRelay } from '../src/index.js'
import { maskKeys, safeErrorLine } from '../src/safe-error-line.js'

describe('safeErrorLine', () => {
  it('gives name, code and the first line of the message, never the stack', () => {
    const error = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379\nmore detail'), { code: 'ECONNREFUSED' })
    const line = safeErrorLine(error)
    expect(line).toBe('Error (ECONNREFUSED): connect ECONNREFUSED 127.0.0.1:6379')
    expect(line).not.toContain('at ')
  })

  it('masks anything shaped like an API key or a bearer token', () => {
    expect(safeErrorLine(new TypeError('bad key sk-abc123XYZ_9 for account'))).toBe(
      'TypeError: bad key sk-*** for account',
    )
    expect(maskKeys('Authorization: Bearer sk-live-secret')).toBe('Authorization: Bearer ***')
    expect(safeErrorLine('plain sk-1234567 text')).toBe('plain sk-*** text')
  })

  // An attack on 27d1e62: the relay's default line printed a configured key that is not sk-shaped.
  it("masks the secrets it is given, whatever their shape, and the relay's default line gives it the guard's keys", async () => {
    expect(safeErrorLine(new Error('no access for key-of-any-shape-42 at all'), ['key-of-any-shape-42'])).toBe(
      'Error: no access for *** at all',
    )
    expect(safeErrorLine('a b c', ['b'])).toBe('a b c') // shorter than 6: a key of a test, not worth garbling a line
    const guard = createGuard({ upstream: { apiKey: 'key-of-any-shape-42', baseURL: 'http://127.0.0.1:9/v1' } })
    const lines: string[] = []
    const spy = vi.spyOn(console, 'error').mockImplementation((line: unknown) => void lines.push(String(line)))
    try {
      const answer = await createRelay(guard)({
        method: 'POST',
        path: '/chat/completions',
        headers: { 'content-type': 'application/json' },
        body: { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] },
        identity: () => {
          throw new Error('the lookup saw key-of-any-shape-42')
        },
      })
      expect(answer.status).toBe(500)
      expect(lines).toEqual(['[qwen-guard] relay: unexpected error Error: the lookup saw ***'])
    } finally {
      spy.mockRestore()
      await guard.close()
    }
  })
})
