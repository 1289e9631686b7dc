import { describe, expect, it } from 'vitest'
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
})
