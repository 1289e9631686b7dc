/**
 * How the estimator reads the tables of vocabulary-tables.ts: base64, some Brotli-compressed, some
 * lists of LEB128 varints.
 */
import { brotliDecompressSync } from 'node:zlib'

/** The bytes of a base64 table of vocabulary-tables.ts. */
export const bitsOf = (base64: string) => Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0))
/** A table shipped Brotli-compressed (vocabulary-tables.ts says which). */
export const unpacked = (base64: string) => new Uint8Array(brotliDecompressSync(Buffer.from(base64, 'base64')))

/** The LEB128 varints (7 bits a byte, low first, high bit: more) of a table, unpacked. */
export function varints(base64: string): number[] {
  const bytes = unpacked(base64)
  const out: number[] = []
  for (let k = 0; k < bytes.length; ) {
    let value = 0
    for (let scale = 1; ; scale *= 128) {
      const byte = bytes[k++] as number
      value += (byte & 127) * scale
      if (byte < 128) break
    }
    out.push(value)
  }
  return out
}

/** The pair codes of a table (first * 65536 + second; sorted, as the LEB128 varints of their differences). */
export function pairSet(table: string): Set<number> {
  const pairs = new Set<number>()
  let code = 0
  for (const gap of varints(table)) pairs.add((code += gap))
  return pairs
}
