import { describe, expect, it } from 'vitest'
import { clientAddress, defaultIdentify } from '../src/client-address.js'

describe('clientAddress', () => {
  it.each([
    ['203.0.113.9', '203.0.113.9'],
    ['::ffff:203.0.113.9', '203.0.113.9'],
    ['::FFFF:cb00:7109', '203.0.113.9'],
    ['[::ffff:127.0.0.1]', '127.0.0.1'],
    ['2001:db8:1:2:aaaa:bbbb:cccc:dddd', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002::1', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8::/64'],
    ['fe80::1%eth0', 'fe80::/64'],
    ['::1', '::/64'],
    ['2001:0:0:5::9', '2001:0:0:5::/64'],
    [undefined, 'unknown'],
    ['', 'unknown'],
  ])('%s -> %s', (input, expected) => {
    expect(clientAddress(input)).toBe(expected)
  })

  it('groups every address of one /64 together and separates neighbouring /64s', () => {
    const a = clientAddress('2001:db8:1:2:1111:2222:3333:4444')
    expect(clientAddress('2001:db8:1:2::ffff')).toBe(a)
    expect(clientAddress('2001:db8:1:3::1')).not.toBe(a)
  })

  it('keeps an unparsable address as its own key rather than merging it with others', () => {
    expect(clientAddress('1:2:3')).toBe('1:2:3')
    expect(clientAddress('::ffff:1.2.3.999')).toBe('::ffff:1.2.3.999')
  })

  it('defaultIdentify sets only the user', () => {
    expect(defaultIdentify('::ffff:10.0.0.1')).toEqual({ user: '10.0.0.1' })
  })
})
