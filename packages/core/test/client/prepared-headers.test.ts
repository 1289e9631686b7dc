/**
 * PreparedHeaders must read exactly like a real Headers made from the same record, and become one
 * on the first change.
 */
import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { PreparedHeaders } from '../../src/client/prepared-headers.js'

const record = {
  'x-ratelimit-remaining-requests': '19',
  'content-type': 'application/json',
  ratelimit: '"user-rpm";r=19;t=60',
  'x-qwen-guard-model': 'qwen-plus',
}

const both = () => ({ prepared: new PreparedHeaders(record), real: new Headers(record) })

describe('PreparedHeaders', () => {
  it('is a Headers', () => {
    expect(new PreparedHeaders(record)).toBeInstanceOf(Headers)
  })

  it('reads like Headers: get in any case, has, sorted iteration, entries, keys, values, forEach', () => {
    const { prepared, real } = both()
    for (const name of ['Content-Type', 'RATELIMIT', 'x-qwen-guard-model', 'absent']) {
      expect(prepared.get(name)).toBe(real.get(name))
      expect(prepared.has(name)).toBe(real.has(name))
    }
    expect([...prepared]).toEqual([...real])
    expect([...prepared.entries()]).toEqual([...real.entries()])
    expect([...prepared.keys()]).toEqual([...real.keys()])
    expect([...prepared.values()]).toEqual([...real.values()])
    const seen: string[] = []
    prepared.forEach(function (this: unknown, value, key, parent) {
      expect(parent).toBe(prepared)
      expect(this).toBe(seen)
      seen.push(`${key}=${value}`)
    }, seen)
    const expected: string[] = []
    real.forEach((value, key) => expected.push(`${key}=${value}`))
    expect(seen).toEqual(expected)
    expect(prepared.getSetCookie()).toEqual([])
  })

  it('hands out copies: changing an iterated entry changes nothing', () => {
    const prepared = new PreparedHeaders(record)
    const first = prepared.entries().next().value as [string, string]
    first[1] = 'changed'
    expect(prepared.get(first[0])).toBe(record[first[0] as keyof typeof record])
  })

  it('throws for an invalid name as Headers does', () => {
    const { prepared, real } = both()
    expect(() => real.get('bad name')).toThrow(TypeError)
    expect(() => prepared.get('bad name')).toThrow(TypeError)
  })

  it('becomes a plain Headers on set, append and delete', () => {
    const { prepared, real } = both()
    for (const headers of [prepared, real]) {
      headers.set('x-qwen-guard-model', 'qwen-flash')
      headers.append('vary', 'origin')
      headers.delete('ratelimit')
      headers.append('set-cookie', 'a=1')
    }
    expect([...prepared]).toEqual([...real])
    expect(prepared.getSetCookie()).toEqual(['a=1'])
    expect(() => prepared.set('x-bad', 'a\nb')).toThrow(TypeError)
  })

  it('copies into a Response and a Headers with every entry', () => {
    const { prepared, real } = both()
    expect([...new Response('x', { headers: prepared }).headers]).toEqual([...real])
    expect([...new Headers(prepared)]).toEqual([...real])
  })

  it('shows its entries when inspected', () => {
    expect(inspect(new PreparedHeaders(record))).toContain('qwen-plus')
  })
})
