/**
 * How the estimator reads the tables of vocabulary-tables.ts: the large ones are bytes in
 * vocabulary-tables.bin beside this module (src/ in the workspace; dist/ in the package, beside the
 * chunks of the ESM and the CommonJS build, which both read that one file), read once, at the first
 * call of vocabularyTables (as estimate.ts loads); some are Brotli-compressed, some lists of LEB128
 * varints. The file's layout: scripts/vocabulary-pack.mjs, which writes it.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { brotliDecompressSync } from 'node:zlib'
import { VOCABULARY_TABLE_NAMES, type VocabularyTables } from './vocabulary-tables.js'

export const VOCABULARY_TABLES_FILE = 'vocabulary-tables.bin'
const MAGIC = 'QGVT'

/**
 * Where vocabulary-tables.bin is: beside this module. The CommonJS build has no `import.meta`
 * (tsup.config.ts defines its `url` undefined there): `__dirname`, the folder of its chunk.
 */
export function vocabularyTablesPath(): string {
  const url = import.meta.url as string | undefined
  return url === undefined
    ? join(__dirname, VOCABULARY_TABLES_FILE)
    : fileURLToPath(new URL(VOCABULARY_TABLES_FILE, url))
}

/** The tables of a vocabulary-tables.bin, by name, in the file's order (views of `file`, not copies). */
export function parseVocabularyTables(file: Uint8Array): Record<string, Uint8Array> {
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength)
  if (bytes.length < 8 || bytes.toString('latin1', 0, 4) !== MAGIC) throw new Error('not a vocabulary-tables.bin')
  const indexEnd = 8 + bytes.readUInt32LE(4)
  const index = JSON.parse(bytes.toString('utf8', 8, indexEnd)) as Array<[name: string, length: number]>
  const tables: Record<string, Uint8Array> = {}
  let at = indexEnd
  for (const [name, length] of index) {
    tables[name] = new Uint8Array(bytes.buffer, bytes.byteOffset + at, length)
    at += length
  }
  if (at !== bytes.length) throw new Error('its index does not match its length')
  return tables
}

let tables: Readonly<VocabularyTables> | undefined

/** The tables of vocabulary-tables.bin, read at the first call. */
export function vocabularyTables(): Readonly<VocabularyTables> {
  if (tables) return tables
  const path = vocabularyTablesPath()
  try {
    const read = parseVocabularyTables(readFileSync(path))
    const missing = VOCABULARY_TABLE_NAMES.filter((name) => read[name] === undefined)
    if (missing.length > 0) throw new Error(`it lacks ${missing.join(', ')}`)
    tables = read as unknown as VocabularyTables
  } catch (err) {
    throw new Error(
      `@qwen-guard/core cannot read its token estimator's tables, ${path} (${(err as Error).message}): ` +
        `the package ships ${VOCABULARY_TABLES_FILE} beside its code in dist/; a bundle needs it beside the bundle`,
    )
  }
  return tables
}

/** A table shipped Brotli-compressed (vocabulary-tables.ts says which), unpacked. */
export const unpacked = (table: Uint8Array) => new Uint8Array(brotliDecompressSync(table))

/** The LEB128 varints (7 bits a byte, low first, high bit: more) of a table, unpacked. */
export function varints(table: Uint8Array): number[] {
  const bytes = unpacked(table)
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
export function pairSet(table: Uint8Array): Set<number> {
  const pairs = new Set<number>()
  let code = 0
  for (const gap of varints(table)) pairs.add((code += gap))
  return pairs
}
