/**
 * The default identity of the adapters: the client's network address. One IPv6 host usually owns a
 * whole /64 (privacy addresses rotate inside it), so IPv6 clients are grouped by that subnet;
 * otherwise one user could mint a fresh quota per request.
 */
import type { Identity } from './types.js'

/** The key used when the address is unknown (a closed socket): one shared bucket, never unlimited. */
const UNKNOWN = 'unknown'

/**
 * A stable user key for a socket address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 as its
 * /64 subnet (`2001:db8:1:2::/64`).
 *
 * @example
 * clientAddress('::ffff:203.0.113.9')                 // '203.0.113.9'
 * clientAddress('2001:db8:1:2:aaaa:bbbb:cccc:dddd')   // '2001:db8:1:2::/64'
 */
export function clientAddress(address: string | undefined | null): string {
  if (!address) return UNKNOWN
  const bare = address
    .trim()
    .replace(/^\[|\]$/g, '')
    .replace(/%.*$/, '')
  if (!bare.includes(':')) return bare || UNKNOWN
  const groups = expandIPv6(bare)
  if (!groups) return bare.toLowerCase()
  if (isIPv4Mapped(groups)) return ipv4FromGroups(groups[6]!, groups[7]!)
  // RFC 5952 form: the /64's zero groups at its end join the '::' that stands for the host part.
  const prefix = groups.slice(0, 4)
  while (prefix.length > 0 && prefix[prefix.length - 1] === 0) prefix.pop()
  return `${prefix.map((group) => group.toString(16)).join(':')}::/64`
}

/**
 * The identity used when no `identify` function is given: `{ user: clientAddress(socketAddress) }`.
 * It reads the socket only, never a header such as `X-Forwarded-For` (a client could forge it);
 * behind a trusted proxy pass `identify` and read the proxy's header there.
 */
export function defaultIdentify(socketAddress: string | undefined | null): Identity {
  return { user: clientAddress(socketAddress) }
}

/** Eight 16-bit groups of an IPv6 address, or undefined when it does not parse. */
function expandIPv6(address: string): number[] | undefined {
  let text = address.toLowerCase()
  // A dotted IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  const dotted = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text)
  if (dotted) {
    const bytes = dotted.slice(1).map(Number)
    if (bytes.some((byte) => byte > 255)) return undefined
    const [a = 0, b = 0, c = 0, d = 0] = bytes
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const halves = text.split('::')
  if (halves.length > 2) return undefined
  const parse = (part: string | undefined) => (part ? part.split(':') : [])
  const head = parse(halves[0])
  const tail = parse(halves[1])
  const missing = 8 - head.length - tail.length
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined
  const groups = [...head, ...Array<string>(halves.length === 1 ? 0 : missing).fill('0'), ...tail]
  if (groups.some((group) => !/^[0-9a-f]{1,4}$/.test(group))) return undefined
  return groups.map((group) => parseInt(group, 16))
}

function isIPv4Mapped(groups: number[]): boolean {
  return groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff
}

function ipv4FromGroups(high: number, low: number): string {
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.')
}
