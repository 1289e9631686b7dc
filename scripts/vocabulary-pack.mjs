// Moves the token estimator's large tables out of vocabulary-tables.ts into vocabulary-tables.bin, beside it,
// so that the package ships them once (the build copies the file into dist/, where the ESM and the
// CommonJS chunks both read it) instead of as base64 inside each of its two builds.
//
// scripts/vocabulary-tables.mjs writes the tables as a TypeScript module of base64 strings and calls
// packVocabularyTables on that text; run alone, this script converts a module of that form in place:
//   node scripts/vocabulary-pack.mjs [path of vocabulary-tables.ts]
// Every exported constant whose value is base64 (one string, or a list of lines joined) goes into the
// .bin as its bytes, in order; its doc comment moves to the VocabularyTables interface. The small tables
// (marks, runs, symbol pairs, byte lists) stay in the module as they are.
//
// vocabulary-tables.bin (packed-tables.ts reads it):
//   bytes 0-3   'QGVT'
//   bytes 4-7   n, a uint32, little-endian: the length of the index
//   next n      the index, JSON (UTF-8): [["NAME", length in bytes], ...], in the file's order
//   then        the tables' bytes, back to back, in that order
import { Buffer } from 'node:buffer'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const MAGIC = 'QGVT'

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** The base64 a constant's value holds (one quoted string, or a list of them joined), or undefined. */
function base64Of(value) {
  const single = /^'([^'\\]*)'$/.exec(value)
  const joined = /^\[\s*((?:'[^'\\]*',?\s*)+)\]\.join\(''\)$/.exec(value)
  const text = single ? single[1] : joined ? [...joined[1].matchAll(/'([^'\\]*)'/g)].map((m) => m[1]).join('') : ''
  if (text.length < 16 || text.length % 4 !== 0 || !BASE64.test(text)) return undefined
  if (Buffer.from(text, 'base64').toString('base64') !== text) return undefined
  return text
}

/** A doc comment's text, one paragraph (the tables' comments are). */
const docText = (doc) =>
  doc
    .replace(/^\s*\/\*\*|\*\/\s*$/g, '')
    .split('\n')
    .map((line) => line.replace(/^\s*\*\s?/, '').trim())
    .filter(Boolean)
    .join(' ')

/** `text` as a doc comment indented by `indent`, its lines at most about 100 characters. */
function docComment(text, indent) {
  const lines = ['']
  for (const word of text.split(' ')) {
    const last = lines.length - 1
    if (lines[last] && lines[last].length + word.length + 1 > 100) lines.push(word)
    else lines[last] = lines[last] ? `${lines[last]} ${word}` : word
  }
  if (lines.length === 1 && indent.length + lines[0].length + 7 <= 120) return `${indent}/** ${lines[0]} */`
  return [`${indent}/**`, ...lines.map((line) => `${indent} * ${line}`), `${indent} */`].join('\n')
}

/** A doc comment about base64 text, made about the bytes (the .bin holds them as they are). */
const aboutBytes = (text) =>
  text
    .replace(/(^|\s+)Base64\.(?=\s|$)/g, '')
    .replace(/,? base64 \(/g, ' (')
    .replace(/,? base64([.,;])/g, '$1')
    .trim()

/**
 * The statements of a vocabulary-tables module: its header comment, then each `export const`
 * with its doc comment (or '') and its value's source text.
 */
function statementsOf(source) {
  const header = /^\s*(\/\*\*[\s\S]*?\*\/)\s*/.exec(source)
  let rest = header ? source.slice(header[0].length) : source
  const statements = []
  const pattern =
    /(?:(\/\*\*[\s\S]*?\*\/)\s*)?export const (\w+) =\s*([\s\S]*?)\s*(?=\n\s*\/\*\*|\n\s*export const |$)/g
  for (const match of rest.matchAll(pattern)) statements.push({ doc: match[1] ?? '', name: match[2], value: match[3] })
  const read = statements.reduce((n, s) => n + s.doc.length + s.name.length + s.value.length, 0)
  rest = rest.replace(/\s+/g, '')
  if (statements.length === 0 || read < rest.length * 0.9)
    throw new Error('vocabulary-pack: not a module of `export const` tables with doc comments')
  return statements
}

/** The bytes of vocabulary-tables.bin for these tables (name -> bytes), in this order. */
export function binOf(tables) {
  const index = Buffer.from(JSON.stringify(tables.map(([name, bytes]) => [name, bytes.length])))
  const head = Buffer.alloc(8)
  head.write(MAGIC, 0, 'latin1')
  head.writeUInt32LE(index.length, 4)
  return Buffer.concat([head, index, ...tables.map(([, bytes]) => bytes)])
}

/**
 * Converts the text of a vocabulary-tables module whose large tables are base64 (what
 * scripts/vocabulary-tables.mjs builds) to the module that ships (`ts`: the small tables, and the
 * large ones' names and comments) and the bytes of the large tables (`bin`). `ts` is formatted with
 * the repository's Prettier settings when `filepath` is given.
 */
export async function packVocabularyTables(source, filepath) {
  const packed = []
  const fields = []
  const kept = []
  let previous = ''
  for (const { doc, name, value } of statementsOf(source)) {
    const base64 = base64Of(value)
    if (base64 === undefined) {
      kept.push(`${doc ? `${doc}\n` : ''}export const ${name} = ${value}`)
      continue
    }
    packed.push([name, Buffer.from(base64, 'base64')])
    const text = doc ? aboutBytes(docText(doc)) : `Described with ${previous}, above.`
    fields.push(`${docComment(text, '  ')}\n  ${name}: Uint8Array`)
    previous = name
  }
  if (packed.length === 0)
    throw new Error('vocabulary-pack: no base64 table to move (is the module converted already?)')
  const names = packed.map(([name]) => `'${name}'`).join(', ')
  let ts = `/**
 * What the token estimator knows of the Qwen3 tokenizer's vocabulary (151,669 entries) without
 * carrying it. The large tables are bytes in vocabulary-tables.bin, beside this module (the build copies
 * it into dist/, where both the ESM and the CommonJS build read it: the package carries one copy),
 * read by packed-tables.ts; the small ones are below. Generated by scripts/vocabulary-tables.mjs from
 * the tokenizer (through scripts/vocabulary-pack.mjs); do not edit.
 */

/** The tables of vocabulary-tables.bin, by name. */
export interface VocabularyTables {
${fields.join('\n')}
}

/** The tables of vocabulary-tables.bin, in the file's order. */
export const VOCABULARY_TABLE_NAMES = [${names}] as const satisfies ReadonlyArray<keyof VocabularyTables>

${kept.join('\n\n')}
`
  if (filepath) {
    const prettier = await import('prettier')
    ts = await prettier.format(ts, { ...(await prettier.resolveConfig(filepath)), filepath })
  }
  return { ts, bin: binOf(packed) }
}

/** Writes `ts` to `path` (a .ts) and `bin` beside it (the same name, .bin). */
export function writeVocabularyTables(path, { ts, bin }) {
  const file = typeof path === 'string' ? path : fileURLToPath(path)
  writeFileSync(file, ts)
  writeFileSync(file.replace(/\.ts$/, '.bin'), bin)
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const path = process.argv[2] ?? fileURLToPath(new URL('../packages/core/src/vocabulary-tables.ts', import.meta.url))
  const converted = await packVocabularyTables(readFileSync(path, 'utf8'), path)
  writeVocabularyTables(path, converted)
  console.log(
    `${path}: ${converted.ts.length} characters; ${path.replace(/\.ts$/, '.bin')}: ${converted.bin.length} bytes`,
  )
}
