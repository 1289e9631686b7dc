/**
 * A fast, script-aware estimate of Qwen3 token counts (byte-level BPE, ~151k vocabulary), tuned on
 * shared/data/qwen-token-counts.json. It needs no vocabulary (the real one costs ~84 MB on disk and
 * ~240 MB of memory): one pass over the UTF-16 code units, summing a weight per run of one script.
 * Settlement from `usage` corrects whatever it gets wrong; an under-estimate is the risky side
 * (it reserves too little), so the weights lean slightly high. Accuracy: docs/estimator.md.
 */
import { brotliDecompressSync } from 'node:zlib'
import {
  ASCII_MARKS,
  MARK_NEWLINE_MERGES,
  MARK_RUN_TOKENS,
  SPACED_MARK_RUN_TOKENS,
  SYMBOL_PAIRS,
} from './vocabulary-tables.js'
import { letterPieceTokens } from './letter-pieces.js'
import { cyrillicLetter, cyrillicWordTokens } from './cyrillic-words.js'
import { whitespaceTokens } from './whitespace-pieces.js'
import { fewestHanTokens } from './han-words.js'
import { pairSet, unpacked, vocabularyTables } from './packed-tables.js'
import type { ChatMessageLike, TokenEstimator } from './types.js'

/** Chat template costs (the Qwen3 tokenizer's ChatML template): `<|im_start|>role\n … <|im_end|>\n` and the assistant prefix. */
export const MESSAGE_OVERHEAD_TOKENS = 5
export const ASSISTANT_PRIMER_TOKENS = 3

/**
 * Weights, in tokens, fitted on the corpus (docs/estimator.md) and then rounded up a little,
 * because an under-estimate reserves too little.
 */
export interface EstimatorWeights {
  /**
   * A word piece of ASCII letters (camelCase splits pieces) that is one token of the vocabulary; one
   * that is not costs at least 2, more by the chance of each split (vocabulary-tables.ts).
   */
  piece: number
  /** A punctuation mark glued to the word after it ("(ms", ".get", "_id"). */
  gluedMark: number
  /**
   * A Han character beside one it shares some token with (HAN_PAIRS): such runs are about two
   * characters a token. A character beside neither neighbour is a token of its own.
   */
  han: number
  hangul: number
  kana: number
  /** Other letters (Cyrillic, Greek, accented Latin beyond ASCII, ...). */
  otherLetter: number
  /** A run of ASCII punctuation: its first mark, then each further mark. */
  punctFirst: number
  punctMore: number
  /** CJK and full-width punctuation, each. */
  cjkPunct: number
  /** Symbols outside ASCII (emoji, arrows): per UTF-8 byte. */
  symbolByte: number
  /** A whitespace pretoken (newline run, indentation, a space before a digit). */
  space: number
}

export const DEFAULT_WEIGHTS: Readonly<EstimatorWeights> = Object.freeze({
  piece: 1,
  gluedMark: 0.4,
  han: 0.45,
  hangul: 0.8,
  kana: 0.45,
  otherLetter: 0.45,
  punctFirst: 1,
  punctMore: 0.2,
  cjkPunct: 0.8,
  symbolByte: 0.4,
  space: 1,
})

// Character classes, following Qwen's pre-tokenizer regex (letters \p{L}, numbers \p{N},
// whitespace, everything else), with letters split by script because their BPE rates differ.
const LATIN = 1
const HAN = 2
const HANGUL = 3
const KANA = 4
const OTHER_LETTER = 5
const DIGIT = 6
const SPACE = 7
const NEWLINE = 8
const PUNCT = 9
const CJK_PUNCT = 10
const SYMBOL = 11

/** Tokens per UTF-16 code unit: `cost` over each inclusive [from, to] range, 0 elsewhere. */
function costTable(ranges: ReadonlyArray<readonly [from: number, to: number, cost: number]>): Float32Array {
  const table = new Float32Array(0x10000)
  for (const [from, to, cost] of ranges) table.fill(cost, from, to + 1)
  return table
}

/**
 * Tokens of one letter the vocabulary barely merges, where its script's weight reads it too cheap;
 * 0 for the rest. From the Qwen3 tokenizer's counts: Greek (prose: 45 tokens for 50 characters),
 * Armenian, Latin Extended-A/B, Cyrillic beyond Russian's alphabet, Persian and Urdu letters and
 * full-width Latin about 1 each, Latin Extended Additional (Vietnamese tones, romanised Sanskrit's
 * dots below) 1.2, Russian capitals 0.8, Hangul jamo 2, Han Extension A 2.6, compatibility
 * ideographs 1.5. A character listed here is a letter (it joins words, and alone costs its own tokens).
 */
const LETTER_COST = costTable([
  [0x100, 0x24f, 1],
  [0x1e00, 0x1eff, 1.2],
  [0x370, 0x3ff, 1],
  [0x1f00, 0x1fff, 1],
  [0x400, 0x40f, 1],
  [0x410, 0x42f, 0.8],
  [0x452, 0x4ff, 1],
  [0x530, 0x58f, 1],
  [0x671, 0x6d3, 1],
  [0x1100, 0x11ff, 2],
  [0x3130, 0x318f, 2],
  [0x3400, 0x4dbf, 2.6],
  [0xf900, 0xfaff, 1.5],
  [0xff21, 0xff5a, 1],
  // Half-width katakana a token each, half-width Hangul letters two: the vocabulary barely merges them
  // (random half-width katakana read 1.25x low as CJK punctuation).
  [0xff66, 0xff9f, 1],
  [0xffa0, 0xffdc, 2],
])

/** The large tables (vocabulary-tables.bin), read as this module loads: the class tables below need them. */
const TABLES = vocabularyTables()

/**
 * Two letters of U+0080-FFFF (Han and Hangul syllables aside) that stand side by side inside some
 * token, by code (first * 65536 + second; 3,509 pairs, LETTER_PAIRS). Inside a word, a letter after
 * one it never follows in any token starts a new token: it costs at least one, whatever its script's
 * weight (random runs of Cyrillic, Arabic or Latin-1 letters read 1.75-2.2x low at their scripts'
 * weights, which fit prose; Vai, Lisu or Bamum words, whose letters no token joins, 1.6-2.5x).
 */
const LETTER_PAIR_SET = pairSet(TABLES.LETTER_PAIRS)

/**
 * A Han character (U+4E00-9FFF) and a kana side by side inside some token, either way round (438
 * pairs, HAN_KANA_PAIRS): a kana between two Han characters that no token holds beside either is a
 * token of its own (random hiragana alternating with common Han read 1.6x low).
 */
const HAN_KANA_PAIR_SET = pairSet(TABLES.HAN_KANA_PAIRS)

/**
 * Two Han characters (U+4E00-9FFF) that are one token together (11,535 pairs, HAN_PAIRS): a common
 * character in none with either neighbour is a token of its own (random common characters read 1.46x
 * low at `han`, which fits the runs of words that merge, about two characters a token).
 */
const HAN_PAIR_TABLE = new Int32Array(1 << 15)
const hanPairSlot = (key: number): number => Math.imul(key, 0x9e3779b1) >>> 17
// Open addressing (about a third full): a lookup per Han character, faster than a Set's.
for (const code of pairSet(TABLES.HAN_PAIRS)) {
  const key = hanPairKey(Math.floor(code / 65536), code % 65536)
  let slot = hanPairSlot(key)
  while (HAN_PAIR_TABLE[slot] !== 0) slot = (slot + 1) & 0x7fff
  HAN_PAIR_TABLE[slot] = key
}

/** A pair of U+4E00-9FFF characters as a key of HAN_PAIR_TABLE (never 0). */
function hanPairKey(a: number, b: number): number {
  return (a - 0x4e00) * 0x5200 + (b - 0x4e00) + 1
}

/** Whether the U+4E00-9FFF characters `a` and `b` after it are one token together (HAN_PAIR_TABLE). */
function hanPaired(a: number, b: number): boolean {
  const key = hanPairKey(a, b)
  for (let slot = hanPairSlot(key); ; slot = (slot + 1) & 0x7fff) {
    const held = HAN_PAIR_TABLE[slot] as number
    if (held === key) return true
    if (held === 0) return false
  }
}

/**
 * Chains of this many characters or more are bounded by fewestHanTokens. A pair alone is one token,
 * where `han` prices it 0.9: bounded too, Chinese prose read 3.6 % higher (1.015 -> 1.051 of exact);
 * `你好` repeated reads 1.1x low.
 */
const HAN_CHAIN_MIN = 3

/**
 * What a chain of Han characters text[from, to) (each one token with the next) costs beyond what its
 * characters cost (`chainCost`): the fewest tokens it splits into (fewestHanTokens), when more. Pairing
 * neighbours two by two, a chain of n is at most ceil(n / 2) tokens: only a bound above what its
 * characters cost needs the search.
 */
function hanChainExtra(text: string, from: number, to: number, chainCost: number): number {
  // (The caller checks the chain is at least HAN_CHAIN_MIN long.)
  if (Math.ceil((to - from) / 2) <= chainCost) return 0
  return Math.max(0, fewestHanTokens(text, from, to, hanPaired) - chainCost)
}

/** A Han character one token with the character before it and with the one after it (`你好的`): at most 2/3. */
const HAN_INSIDE_TOKENS = 2 / 3

/** Whether Han character `a` and `b` after it (Han or kana) stand side by side inside some token. */
function hanJoins(a: number, b: number): boolean {
  if (b >= 0x4e00 && b <= 0x9fff && a >= 0x4e00 && a <= 0x9fff) return hanPaired(a, b)
  return hanOrKana(a, b) && HAN_KANA_PAIR_SET.has(a * 65536 + b)
}

/**
 * Two kana that are one token together (501 pairs, KANA_PAIRS). Two kana that only stand inside a
 * longer token (`のの` of `ものの`) do not merge: `のののの` is four tokens, read 2.3 when any token
 * holding the pair counted.
 */
const KANA_PAIR_SET = pairSet(TABLES.KANA_PAIRS)
const kana = (c: number): boolean => c >= 0x3040 && c <= 0x30ff

const hanOrKana = (a: number, b: number) =>
  (a >= 0x4e00 && a <= 0x9fff && b >= 0x3040 && b <= 0x30ff) ||
  (a >= 0x3040 && a <= 0x30ff && b >= 0x4e00 && b <= 0x9fff)

/**
 * The letters LETTER_PAIRS covers: U+0080-FFFF but Han (and its compatibility block) and Hangul
 * syllables (the same as isPairLetter in scripts/vocabulary-tables.mjs, which writes the table).
 */
function pairLetter(c: number): boolean {
  if (c < 0x80 || c > 0xffff) return false
  return !((c >= 0x3400 && c <= 0x9fff) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xac00 && c <= 0xd7af))
}

/**
 * Whether letter `b` after letter `a` may continue a token (always, outside pairLetter's letters and
 * the Han-kana pairs).
 */
function mergesAfter(a: number, b: number): boolean {
  if (hanOrKana(a, b)) return HAN_KANA_PAIR_SET.has(a * 65536 + b)
  if (kana(a) && kana(b)) return KANA_PAIR_SET.has(a * 65536 + b)
  if (!pairLetter(a) || !pairLetter(b)) return true
  return LETTER_PAIR_SET.has(a * 65536 + b)
}

/** Whether letter `a` may share a token with letter `b` after it (an ASCII letter: always). */
function mergesBefore(a: number, b: number): boolean {
  return b < 0x80 || mergesAfter(a, b)
}

/**
 * A Han character or Hangul syllable the vocabulary has no token of its own for (12,491 of the 20,992
 * Han of U+4E00-9FFF, 8,660 of the Hangul syllables: rare ones) is two or three tokens, not the
 * script's weight (which fits common text, where two-character words merge).
 */
const RARE_CHAR_TOKENS = 2
function markRare(bits: Uint8Array, from: number, to: number): void {
  for (let c = from; c <= to; c++)
    if (((bits[(c - from) >> 3] as number) & (1 << ((c - from) & 7))) === 0) LETTER_COST[c] = RARE_CHAR_TOKENS
}
markRare(TABLES.SINGLE_TOKEN_HAN, 0x4e00, 0x9fff)
markRare(TABLES.SINGLE_TOKEN_HANGUL, 0xac00, 0xd7a3)

/**
 * A Han character that is one token but in no token of two or more Han characters (HAN_IN_WORDS:
 * most traditional characters) is one token wherever it stands, not the script's weight (which counts
 * on common two-character words merging).
 */
const LONE_CHAR_TOKENS = 1
{
  const inWords = TABLES.HAN_IN_WORDS
  for (let c = 0x4e00; c <= 0x9fff; c++) {
    const i = c - 0x4e00
    if (LETTER_COST[c] !== RARE_CHAR_TOKENS && ((inWords[i >> 3] as number) & (1 << (i & 7))) === 0)
      LETTER_COST[c] = LONE_CHAR_TOKENS
  }
}

/**
 * Tokens of one code unit the vocabulary does not merge, where its UTF-8 bytes x `symbolByte`
 * (fitted on emoji) reads it too cheap; 0 for the rest. From the Qwen3 tokenizer's counts of random
 * runs of each block: control characters a token a byte; combining marks (zalgo accents, Hebrew
 * points, Arabic vowel marks) and Arabic-Indic digits 2 each; private use, specials and variation
 * selectors a token a byte; supplementary characters by plane, on the high surrogate (the low one
 * costs nothing): ancient scripts 3, Han Extension B and later, tags and supplementary private use 4,
 * emoji (U+1F000-1FAFF) left to `symbolByte`.
 */
const SYMBOL_COST = costTable([
  [0x00, 0x08, 1],
  [0x0e, 0x1f, 1],
  [0x7f, 0x7f, 1],
  [0x80, 0x9f, 2],
  [0x300, 0x36f, 2],
  [0x483, 0x489, 2],
  [0x591, 0x5c7, 2],
  [0x610, 0x61a, 2],
  [0x64b, 0x65f, 2],
  [0x660, 0x669, 2],
  [0x670, 0x670, 2],
  [0x6d6, 0x6ed, 2],
  [0x6f0, 0x6f9, 2],
  [0x1ab0, 0x1aff, 2],
  [0x1dc0, 0x1dff, 2],
  [0x20d0, 0x20ff, 2],
  [0xd800, 0xd83b, 3],
  [0xd83f, 0xdbff, 4],
  [0xe000, 0xf8ff, 3],
  [0xfe00, 0xfe0f, 2],
  [0xfe20, 0xfe2f, 2],
  [0xfff0, 0xffff, 3],
  [0x3100, 0x312f, 2],
  [0xa000, 0xa4cf, 2],
  // Scripts the vocabulary barely merges, per code unit (letters and vowel signs alike), fitted on the
  // names of languages and regions in each script's language (Node's ICU) against the tokenizer:
  // Gurmukhi, Gujarati, Oriya, Telugu, Kannada, Malayalam, Sinhala, Lao, Tibetan, Myanmar, Ethiopic,
  // Khmer read 1.2-1.95x low at 3 bytes x `symbolByte`.
  [0xa00, 0xa7f, 1.9],
  [0xa80, 0xaff, 1.9],
  [0xb00, 0xb7f, 2.4],
  [0xc00, 0xc7f, 1.8],
  [0xc80, 0xcff, 1.7],
  [0xd00, 0xd7f, 1.7],
  [0xd80, 0xdff, 1.8],
  [0xe80, 0xeff, 1.5],
  [0xf00, 0xfff, 1.6],
  [0x1000, 0x109f, 1.7],
  [0x1200, 0x139f, 1.7],
  [0x1780, 0x17ff, 1.5],
  // Tibetan signs the tokenizer decomposes (NFC/NFD) into several code points: 4 to 6 tokens each.
  [0xf43, 0xf43, 4],
  [0xf4d, 0xf4d, 5],
  [0xf52, 0xf52, 4],
  [0xf57, 0xf57, 4],
  [0xf5c, 0xf5c, 4],
  [0xf69, 0xf69, 4],
  [0xf73, 0xf73, 4],
  [0xf75, 0xf75, 4],
  [0xf76, 0xf76, 6],
  [0xf78, 0xf78, 6],
  [0xf81, 0xf81, 5],
  [0xf93, 0xf93, 6],
  [0xf9d, 0xf9d, 6],
  [0xfa2, 0xfa2, 6],
  [0xfa7, 0xfa7, 6],
  [0xfac, 0xfac, 6],
  [0xfb9, 0xfb9, 6],
])

function classOf(c: number): number {
  if (SYMBOL_COST[c] !== 0) return SYMBOL
  if (c < 128) {
    if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90)) return LATIN
    if (c >= 48 && c <= 57) return DIGIT
    if (c === 10 || c === 13) return NEWLINE
    if (c === 32 || c === 9 || c === 11 || c === 12) return SPACE
    return PUNCT
  }
  if ((c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0xf900 && c <= 0xfaff)) return HAN
  if ((c >= 0xac00 && c <= 0xd7af) || (c >= 0x1100 && c <= 0x11ff) || (c >= 0x3130 && c <= 0x318f)) return HANGUL
  if (c >= 0x3040 && c <= 0x30ff && c !== 0x30fb) return KANA
  if (c === 0xa0 || c === 0x3000 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029) return SPACE
  // Whitespace to the pre-tokenizer (\s) too: three UTF-8 bytes the vocabulary does not merge, two tokens.
  if (c === 0x1680 || c === 0x202f || c === 0x205f) return SPACE
  if ((c >= 0x3000 && c <= 0x303f) || (c >= 0xff00 && c <= 0xffef) || c === 0x30fb) {
    return c >= 0xff10 && c <= 0xff19
      ? DIGIT
      : (c >= 0xff21 && c <= 0xff5a && (c <= 0xff3a || c >= 0xff41)) ||
          (c >= 0xff66 && c <= 0xffdc && /\p{L}/u.test(String.fromCharCode(c)))
        ? OTHER_LETTER
        : CJK_PUNCT
  }
  // Latin-1 and Latin Extended letters, Greek, Cyrillic, Armenian, Hebrew, Arabic: letters.
  if (LETTER_COST[c] !== 0) return OTHER_LETTER
  if ((c >= 0xc0 && c <= 0x24f && c !== 0xd7 && c !== 0xf7) || (c >= 0x370 && c <= 0x6ff)) return OTHER_LETTER
  return SYMBOL // letters among these are sorted out where CLASS is built
}

const LETTER = /^\p{L}$/u
/** Tokens per UTF-8 byte of a letter no table prices, inside a word (what a symbol byte costs). */
const RARE_LETTER_BYTE_TOKENS = 0.4

function isLetter(cls: number): boolean {
  return cls >= LATIN && cls <= OTHER_LETTER
}

/** UTF-8 length of one UTF-16 code unit (a surrogate pair: 4 on its high half, 0 on its low). */
function utf8Bytes(c: number): number {
  if (c < 0x80) return 1
  if (c < 0x800) return 2
  if (c >= 0xd800 && c <= 0xdbff) return 4
  if (c >= 0xdc00 && c <= 0xdfff) return 0
  return 3
}

/** Class of every UTF-16 code unit, computed once (64 KiB): the hot loop does one load per char. */
const CLASS = new Uint8Array(0x10000)
/**
 * Letters priced as symbols (SYMBOL_COST: scripts whose words the vocabulary barely merges, tuned on
 * their prose), one bit each: standing alone, such a letter still costs its own tokens (markRun).
 */
const SYMBOL_LETTER = new Uint8Array(0x10000 >> 3)
/**
 * Symbols and CJK punctuation below U+10000 that no table prices (SYMBOL_COST), one bit each: beside
 * no neighbour it shares a token with (SYMBOL_PAIRS), such a symbol costs its own tokens (markRun).
 */
const PAIRED_SYMBOL = new Uint8Array(0x10000 >> 3)
for (let c = 0; c < 0x10000; c++) {
  let cls = classOf(c)
  if (cls === SYMBOL && LETTER.test(String.fromCharCode(c))) {
    if (SYMBOL_COST[c] !== 0) SYMBOL_LETTER[c >> 3]! |= 1 << (c & 7)
    else {
      // A letter of a script nothing above prices: a letter still, so it joins words and alone costs
      // its own tokens (CHAR_ALONE_TOKENS); inside a word, its UTF-8 bytes at a symbol's rate.
      cls = OTHER_LETTER
      LETTER_COST[c] = utf8Bytes(c) * RARE_LETTER_BYTE_TOKENS
    }
  }
  if ((cls === CJK_PUNCT || (cls === SYMBOL && SYMBOL_COST[c] === 0)) && (c < 0xd800 || c > 0xdfff))
    PAIRED_SYMBOL[c >> 3]! |= 1 << (c & 7)
  CLASS[c] = cls
}
const pairedSymbol = (c: number): boolean => ((PAIRED_SYMBOL[c >> 3] as number) & (1 << (c & 7))) !== 0
const classAt = (text: string, i: number): number => CLASS[text.charCodeAt(i)] as number

const SPLITS = TABLES.SPLIT_CHANCES
const CAPITAL_SPLITS = unpacked(TABLES.CAPITAL_SPLIT_CHANCES)
const SPACED_EXTRA = TABLES.SPACED_CHAR_EXTRA
const ALONE = unpacked(TABLES.CHAR_ALONE_TOKENS)
// The combining marks of the extended and supplement blocks are three UTF-8 bytes the vocabulary never
// merges, with a letter or with each other: their own tokens each (3, a few 2). At 2 each, Zalgo text
// of them read 1.33-1.44x low.
for (const [from, to] of [
  [0x1ab0, 0x1aff],
  [0x1dc0, 0x1dff],
  [0x20d0, 0x20ff],
] as const)
  for (let c = from; c <= to; c++) SYMBOL_COST[c] = aloneTokens(c)
/** Where the first split point's chances start in SPLITS (after the 26^3 trigram contexts). */
const FIRST_SPLIT = 26 * 26 * 26

// 32-bit FNV-1a of a piece's characters, of ' ' + piece after a space, from a basis of this process's
// own: the filter below is built with it, so the few words it passes by mistake (which read one token
// each) differ from process to process and cannot be searched for offline.
const FNV_PRIME = 0x01000193
const FNV_BASIS = (0x811c9dc5 ^ (crypto.getRandomValues(new Uint32Array(1))[0] as number)) >>> 0
const FNV_SPACED_BASIS = Math.imul(FNV_BASIS ^ 0x20, FNV_PRIME) >>> 0

/**
 * The one-token words' Bloom filter: 2^21 bits (256 KB, 30 a word) and 10 probes: about 2 in 100,000
 * other words pass by mistake, most of them by a collision of the 32-bit hash (a smaller filter let 3 %
 * pass: a prompt's estimate would move from process to process); built by `prepareEstimator` (createGuard calls it) or on first use, in about 20 ms.
 */
const BLOOM_BITS = 1 << 21
const BLOOM_PROBES = 10
let wordBloom: Uint8Array | undefined

function buildWordBloom(): Uint8Array {
  const bloom = new Uint8Array(BLOOM_BITS / 8)
  const list = brotliDecompressSync(TABLES.ONE_TOKEN_WORD_LIST).toString('latin1')
  let previous = ''
  for (const line of list.split('\n')) {
    const word = previous.slice(0, line.charCodeAt(0) - 48) + line.slice(1)
    previous = word
    let hash = FNV_BASIS
    for (let i = 0; i < word.length; i++) hash = Math.imul(hash ^ word.charCodeAt(i), FNV_PRIME) >>> 0
    const h2 = probeStep(hash)
    for (let i = 0; i < BLOOM_PROBES; i++) {
      const at = (hash + Math.imul(i, h2)) & (BLOOM_BITS - 1)
      bloom[at >> 3] = (bloom[at >> 3] as number) | (1 << (at & 7))
    }
  }
  return bloom
}

/** The second hash of double hashing (probe i at h + i * step), odd. */
function probeStep(hash: number): number {
  let h = Math.imul(hash ^ (hash >>> 16), 0x45d9f3b) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0
  return ((h ^ (h >>> 16)) | 1) >>> 0
}

/**
 * Builds what the estimate reads on first use (the one-token word filter, about 20 ms), so that the
 * first call does not wait for it. `createGuard` calls it; idempotent.
 */
export function prepareEstimator(): void {
  wordBloom ??= buildWordBloom()
}

/** Whether a piece with this hash is (probably) one token of the vocabulary. */
function oneToken(hash: number): boolean {
  const bloom = (wordBloom ??= buildWordBloom())
  const step = probeStep(hash)
  for (let i = 0; i < BLOOM_PROBES; i++) {
    const at = (hash + Math.imul(i, step)) & (BLOOM_BITS - 1)
    if (((bloom[at >> 3] as number) & (1 << (at & 7))) === 0) return false
  }
  return true
}

/**
 * The chance (0-1) that the tokenizer splits a word before letter `c`, after `a` `b` (a = -1: `b` is
 * the first); `capitals`: the three are capitals, which merge far less (their own table).
 */
function splitChance(a: number, b: number, c: number, capitals: boolean): number {
  const i = a < 0 ? FIRST_SPLIT + b * 26 + c : (a * 26 + b) * 26 + c
  return ((((capitals ? CAPITAL_SPLITS : SPLITS)[i >> 1] as number) >> ((i & 1) * 4)) & 15) / 15
}

/**
 * Tokens of character `c` standing alone (vocabulary-tables.ts): most letters outside common alphabets
 * and most symbols are two or three; 1 for Han and Hangul syllables (their own tables price them).
 */
function aloneTokens(c: number): number {
  return 1 + (((ALONE[c >> 2] as number) >> ((c & 3) * 2)) & 3)
}

/**
 * A word piece of ASCII letters ending before `end`: `piece` when the vocabulary has it as one token (a
 * common word, with its leading space when one came before it); else at least 2, and 1 + the expected
 * splits when more (a word of another language, a name, random letters), unless that reads more than
 * REPLAYED_LETTERS_PER_TOKEN letters a token of a piece of REPLAYED_LETTERS or more: then the
 * tokenizer's merges replayed on it (letterPieceTokens: exact for the piece).
 */
function pieceCost(
  text: string,
  end: number,
  length: number,
  hash: number,
  splits: number,
  w: EstimatorWeights,
): number {
  if (length === 0) return 0
  if (oneToken(hash)) return w.piece
  const guess = Math.max(2, 1 + splits)
  return length < REPLAYED_LETTERS || length <= guess * REPLAYED_LETTERS_PER_TOKEN
    ? guess
    : letterPieceTokens(text, end - length, end)
}
/** A shorter piece that is not one token is two or three, which the split chances read well enough. */
const REPLAYED_LETTERS = 4
/**
 * The replay costs a heap operation a letter: it runs only where the split chances read more letters
 * a token than this (glued English words are 3-11 by them, 2-3 by BPE; random letters and base64 about
 * 2.3, which the chances read within 10 %): 1 MB of base64 in 0.13 s instead of 0.24 s, of distinct
 * random words 0.15 s instead of 0.3 s (0.07 and 0.05 s without any replay).
 */
const REPLAYED_LETTERS_PER_TOKEN = 2

/** The tokens a space before character `c` adds (vocabulary-tables.ts): 0 before ASCII (priced with the word or run). */
function spacedExtra(c: number): number {
  return c < 0x80 ? 0 : ((SPACED_EXTRA[c >> 2] as number) >> ((c & 3) * 2)) & 3
}

/**
 * Cost of a run of letters starting at `i`; the index after it goes to `out.end`. ASCII letters make
 * pieces (camelCase starts a new one) priced by `pieceCost`, each hashed (FNV-1a) and its splits'
 * chances summed as it is read; other letters cost each.
 */
function letterRun(text: string, i: number, w: EstimatorWeights, out: { end: number }): number {
  let cost = 0
  let piece = 0
  let prevLower = false
  let hash = i > 0 && text.charCodeAt(i - 1) === 32 ? FNV_SPACED_BASIS : FNV_BASIS
  let splits = 0
  // The piece's last two letters (0 = 'a'), -1 until it has them; how many capitals end it.
  let first = -1
  let second = -1
  let capitals = 0
  // The last common Han character read and whether it joins the character after it (hanJoins).
  let hanAt = -1
  let hanAfter = false
  // Where the chain of Han characters the last one is in started, and what its characters cost.
  let chainFrom = -1
  let chainCost = 0
  let j = i
  for (; j < text.length; j++) {
    const c = text.charCodeAt(j)
    const cls = CLASS[c] as number
    if (cls === LATIN) {
      const upper = c <= 90
      if (upper && prevLower) {
        // camelCase: a new piece
        cost += pieceCost(text, j, piece, hash, splits, w)
        piece = splits = 0
        hash = FNV_BASIS
        first = second = -1
        capitals = 0
      }
      prevLower = !upper
      capitals = upper ? capitals + 1 : 0
      piece++
      hash = Math.imul(hash ^ c, FNV_PRIME) >>> 0
      const letter = (c | 32) - 97
      if (second >= 0) splits += splitChance(first, second, letter, capitals >= (first < 0 ? 2 : 3))
      first = second
      second = letter
      continue
    }
    if (!isLetter(cls)) break
    cost += pieceCost(text, j, piece, hash, splits, w)
    piece = splits = 0
    hash = FNV_BASIS
    first = second = -1
    capitals = 0
    prevLower = false
    if (c >= 0x400 && c <= 0x4ff && cyrillicLetter(c) && (j === i || CLASS[text.charCodeAt(j - 1)] === LATIN)) {
      // A word of Cyrillic letters beside ASCII letters or none (`этоfirst`, `Москваtwo`): no token holds
      // letters of both, so the word's own count is exact (priced per letter, glued Cyrillic words read
      // 1.45x low).
      let end = j + 1
      while (end < text.length && cyrillicLetter(text.charCodeAt(end))) end++
      const after = CLASS[text.charCodeAt(end)] as number
      if (end === text.length || after === LATIN || !isLetter(after)) {
        const spaced = j === i && i > 0 && text.charCodeAt(i - 1) === 32
        // A caller that saw the space adds spacedExtra for it; the exact count has it already.
        cost += cyrillicWordTokens(text, j, end, spaced) - (spaced ? spacedExtra(c) : 0)
        j = end - 1
        continue
      }
    }
    const weight = (LETTER_COST[c] as number) || letterCost(cls, w)
    if (cls === HAN && LETTER_COST[c] === 0) {
      // A common Han character beside one it shares some token with (HAN_PAIRS, HAN_KANA_PAIRS): `han`,
      // about two characters a token in such runs; beside neither, a token of its own. After a space
      // that no token holds before it, the space takes its first byte (` 错误` is ` \xe9` `\x94\x99` `误`):
      // it joins nothing (the caller adds what the space costs).
      // Joined on both sides, it may lose both to its neighbours' pairs (`你好的` is `你` `好的`): BPE
      // leaves at most one character alone beside each pair it merges, so such runs cost up to two
      // tokens in three characters (HAN_INSIDE_TOKENS).
      const broken = j <= i + 1 && brokenBySpace(text, i)
      const before =
        j > i && !(j === i + 1 && broken) && (hanAt === j - 1 ? hanAfter : hanJoins(text.charCodeAt(j - 1), c))
      const after = !(j === i && broken) && hanJoins(c, text.charCodeAt(j + 1))
      // A run of characters each one token with the next (a chain) is never fewer tokens than the fewest
      // one-token pairs, words and characters it splits into (fewestHanTokens: `你好的` is two).
      if (!(before && hanAt === j - 1)) {
        chainFrom = j
        chainCost = 0
      }
      hanAt = j
      hanAfter = after
      const charCost =
        before && after ? Math.max(weight, HAN_INSIDE_TOKENS) : before || after ? weight : Math.max(weight, 1)
      cost += charCost
      chainCost += charCost
      const next = text.charCodeAt(j + 1)
      if (j - chainFrom + 1 >= HAN_CHAIN_MIN && !(after && next >= 0x4e00 && next <= 0x9fff && LETTER_COST[next] === 0))
        cost += hanChainExtra(text, chainFrom, j + 1, chainCost)
      continue
    }
    // A letter standing alone merges with nothing: its own tokens (two or three for most letters
    // outside the common alphabets), where inside a word the script's weight holds.
    const alone = j === i && !isLetter(CLASS[text.charCodeAt(j + 1)] as number)
    // Kana are left to their weight: Japanese runs words together, so two kana that no token holds
    // side by side are mostly just where one word's token ends.
    const split = j > i && cls === OTHER_LETTER && !mergesAfter(text.charCodeAt(j - 1), c)
    // A letter no token holds beside the letter before it nor beside the one after it is a token of
    // its own, or its own several (random words of Ethiopic, Coptic, Glagolitic, Thaana or Mongolian
    // letters read 1.6-2.5x low at a token each). Kana too, after a kana or a Han character (random
    // kana read 1.6-1.8x low, kana alternating with Han 1.6x; in Japanese prose a kana merges on one
    // side or the other).
    const before = CLASS[text.charCodeAt(j - 1)]
    // A kana first in its run, or after a letter that is no kana nor Han (`WHILEコシ`), starts a token too.
    const kanaSplit =
      cls === KANA && (j === i || (before !== KANA && before !== HAN) || !mergesAfter(text.charCodeAt(j - 1), c))
    const next = text.charCodeAt(j + 1)
    const nextCls = CLASS[next] as number
    // The vocabulary barely joins a kana to a letter after it that is no kana nor Han.
    const mergesNext =
      isLetter(nextCls) &&
      (cls === KANA ? (nextCls === KANA || nextCls === HAN) && mergesAfter(c, next) : mergesBefore(c, next))
    const apart = (split || kanaSplit || (j === i && cls === OTHER_LETTER)) && !mergesNext
    cost += alone || apart ? Math.max(weight, aloneTokens(c)) : split ? Math.max(weight, 1) : weight
  }
  out.end = j
  return cost + pieceCost(text, j, piece, hash, splits, w)
}

/** Whether the letter at `i` comes after a space that no token holds before it: the space takes its first byte. */
function brokenBySpace(text: string, i: number): boolean {
  return i > 0 && text.charCodeAt(i - 1) === 32 && spacedExtra(text.charCodeAt(i)) > 0
}

/** Cost of one non-letter, non-digit, non-space character. */
function markCost(c: number, cls: number, first: boolean, w: EstimatorWeights): number {
  if (cls === CJK_PUNCT) return w.cjkPunct
  if (cls === SYMBOL) return (SYMBOL_COST[c] as number) || utf8Bytes(c) * w.symbolByte
  return first ? w.punctFirst : w.punctMore
}

/**
 * Estimated tokens of a text alone (no chat template); 0 for ''. Mirrors the alternatives of
 * Qwen's pre-tokenizer in order: [one mark or space] + letters, a single digit, [space] + a run of
 * marks (+ newlines), whitespace up to a newline, spaces before a word, other whitespace.
 */
export function estimateTextTokensWith(text: string, w: EstimatorWeights): number {
  const out = { end: 0 }
  const n = text.length
  let total = 0
  let i = 0
  while (i < n) {
    const c = text.charCodeAt(i)
    const cls = CLASS[c] as number
    if (isLetter(cls)) {
      total += letterRun(text, i, w, out)
      i = out.end
      continue
    }
    const nextCls = i + 1 < n ? classAt(text, i + 1) : 0
    if (cls === DIGIT) {
      total += 1
      i++
    } else if (cls !== NEWLINE && isLetter(nextCls)) {
      // A space is free before a word; a mark glued to a word of ASCII letters often merges with it;
      // the vocabulary rarely joins a mark to other letters (a mark before each 1-3 Han characters or
      // kana read 1.6x low, before each random Hebrew word 1.5x).
      total +=
        letterRun(text, i + 1, w, out) +
        (c === 32
          ? spacedExtra(text.charCodeAt(i + 1))
          : cls === SPACE
            ? Math.max(w.space, longWhitespaceCost(text, i, i + 1))
            : cls === PUNCT && nextCls === LATIN
              ? w.gluedMark
              : pairedSymbol(c) && !symbolJoins(c, text.charCodeAt(i + 1))
                ? aloneTokens(c)
                : markCost(c, cls, true, w))
      i = out.end
    } else if (
      cls === PUNCT ||
      cls === CJK_PUNCT ||
      cls === SYMBOL ||
      (c === 32 && (nextCls === PUNCT || nextCls === CJK_PUNCT || nextCls === SYMBOL))
    ) {
      i = markRun(text, c === 32 ? i + 1 : i, c === 32, w, out)
      total += out.end
    } else {
      // Whitespace: up to the last newline of the run is one piece; spaces before a word keep
      // one space for the word; anything left is one piece.
      let j = i
      let lastNewline = -1
      while (j < n) {
        const k = classAt(text, j)
        if (k === NEWLINE) lastNewline = j
        else if (k !== SPACE) break
        j++
      }
      const end = lastNewline >= 0 ? lastNewline + 1 : j < n && j - i > 1 ? j - 1 : j
      total += whitespaceCost(text, i, end, w)
      i = end
    }
  }
  return Math.ceil(total)
}

/**
 * Tokens of a whitespace piece: exact when it is ASCII whitespace (whitespace-pieces.ts), else
 * longWhitespaceCost, at least `space`.
 */
function whitespaceCost(text: string, from: number, to: number, w: EstimatorWeights): number {
  const exact = whitespaceTokens(text, from, to)
  return exact >= 0 ? exact : Math.max(w.space, longWhitespaceCost(text, from, to))
}

/**
 * Tokens of a long whitespace piece with a Unicode space, from above. Qwen's vocabulary merges runs of one character
 * (up to 128 spaces, about 32 newlines or 16 tabs a token) but has no long run of most others: a
 * `\r` alone is a token each, an ideographic space two a token, `\r\n` pairs four a token (Qwen3
 * tokenizer, measured). A change of character inside the piece usually starts a token. Short
 * pieces (a blank line, indentation) stay one token (`space`); this only decides long ones.
 */
function longWhitespaceCost(text: string, from: number, to: number): number {
  let cost = 0
  let previous = -1
  for (let j = from; j < to; j++) {
    const c = text.charCodeAt(j)
    if (c === 13 && j + 1 < to && text.charCodeAt(j + 1) === 10) {
      cost += CRLF_TOKENS + (previous === 13 ? 0 : CHANGE_TOKENS)
      previous = 13
      j++
      continue
    }
    cost +=
      c === 32
        ? SPACE_TOKENS
        : c === 10
          ? NEWLINE_TOKENS
          : c === 9
            ? TAB_TOKENS
            : c === 13 || c === 11 || c === 12
              ? 1
              : (c >= 0x2000 && c <= 0x2029) || c === 0x1680 || c === 0x202f || c === 0x205f
                ? 2
                : OTHER_SPACE_TOKENS
    if (previous !== -1 && c !== previous) cost += CHANGE_TOKENS
    previous = c
  }
  return cost
}

function letterCost(cls: number, w: EstimatorWeights): number {
  return cls === HAN ? w.han : cls === HANGUL ? w.hangul : cls === KANA ? w.kana : w.otherLetter
}

// Per character of a long whitespace piece, rounded up from the Qwen3 tokenizer's counts of
// 1,000-character runs (space 9, newline 32, tab 63, \r 1,000, \r\n pairs 250, U+3000 500).
const SPACE_TOKENS = 1 / 64
const NEWLINE_TOKENS = 1 / 16
const TAB_TOKENS = 1 / 8
const CRLF_TOKENS = 0.3
const OTHER_SPACE_TOKENS = 0.5
const CHANGE_TOKENS = 0.5

/** A surrogate without its other half. */
function lone(text: string, j: number): boolean {
  const c = text.charCodeAt(j)
  if (c <= 0xdbff) {
    const next = j + 1 < text.length ? text.charCodeAt(j + 1) : 0
    return next < 0xdc00 || next > 0xdfff
  }
  const before = j > 0 ? text.charCodeAt(j - 1) : 0
  return before < 0xd800 || before > 0xdbff
}

/**
 * A further ASCII mark unlike the one before it (`<^`, `"_{`), when the two are not a common pair
 * of code or JSON (COMMON_PAIRS, `punctMore`): half a token when the vocabulary has the two as one
 * token (MARK_PAIR_TOKENS; the tokenizer merges only some of those, by rank), most of one when it
 * has not. Fitted on 3,000 seeded random runs of 2-21 marks against the Qwen3 tokenizer (0.51 and
 * 0.87); a run of them cost 0.3 a mark before, half what it costs.
 */
const MARK_CHANGE_IN_PAIR_TOKENS = 0.5
const MARK_CHANGE_TOKENS = 0.87

/** MARK_PAIR_TOKENS and the run tables by character code: the mark's index in ASCII_MARKS, -1 for others. */
const MARK_INDEX = new Int8Array(128).fill(-1)
for (let i = 0; i < ASCII_MARKS.length; i++) MARK_INDEX[ASCII_MARKS.charCodeAt(i)] = i
const MARK_PAIRS = TABLES.MARK_PAIR_TOKENS

/**
 * A symbol outside ASCII and what stands beside it inside some token (SYMBOL_PAIRS, first * 65536 +
 * second: `”,`, `…]`, `——`, `。\n`, ` —`, `’s`). After any other symbol (`°`, `〿`, `→`, an emoji) an
 * ASCII mark starts a token: a mark after each read 2-3x low at `punctMore`. A symbol in no pair with
 * either neighbour is its own tokens: random CJK punctuation, block elements, braille, CJK radicals and
 * enclosed characters read 1.5-1.7x low at `cjkPunct` or 3 bytes x `symbolByte`.
 */
const SYMBOL_PAIR_SET = new Set<number>()
for (let k = 0; k + 1 < SYMBOL_PAIRS.length; k += 2)
  SYMBOL_PAIR_SET.add(SYMBOL_PAIRS.charCodeAt(k) * 65536 + SYMBOL_PAIRS.charCodeAt(k + 1))
const symbolJoins = (a: number, b: number): boolean => SYMBOL_PAIR_SET.has(a * 65536 + b)

/**
 * Tokens of a run of `n` of the mark at `index` (MARK_RUN_TOKENS; after a space, SPACED_MARK_RUN_TOKENS):
 * the vocabulary merges runs unevenly (`~` 16 long is one token, 15 long four), so a run costs what
 * the tokenizer makes of it; past 64, 64 at a time.
 */
function markStretchTokens(index: number, n: number, spaced: boolean): number {
  let tokens = 0
  for (; n > 64; n -= 64, spaced = false)
    tokens += (spaced ? SPACED_MARK_RUN_TOKENS : MARK_RUN_TOKENS)[index]!.charCodeAt(63) - 48
  return tokens + (spaced ? SPACED_MARK_RUN_TOKENS : MARK_RUN_TOKENS)[index]!.charCodeAt(n - 1) - 48
}

/**
 * A change of ASCII mark (`previous` to `c`, both marks): a common pair of code or JSON costs
 * `punctMore`, a pair the vocabulary has as one token MARK_CHANGE_IN_PAIR_TOKENS, any other
 * MARK_CHANGE_TOKENS. Right after a run of one mark (`..-`, `>>=`), which the tokenizer merges first,
 * only a common pair keeps its discount.
 */
function nextMarkCost(previous: number, c: number, afterRun: boolean, w: EstimatorWeights): number {
  if (COMMON_PAIRS.has(previous * 128 + c)) return w.punctMore
  if (afterRun) return MARK_CHANGE_TOKENS
  const pair = (MARK_INDEX[previous] as number) * ASCII_MARKS.length + (MARK_INDEX[c] as number)
  return ((MARK_PAIRS[pair >> 3] as number) & (1 << (pair & 7))) !== 0 ? MARK_CHANGE_IN_PAIR_TOKENS : MARK_CHANGE_TOKENS
}

/**
 * A mixed run of marks costs at least MARK_MIN_TOKENS a change of mark (and a second mark of a run of
 * one) past the first MARK_FREE_CHANGES: the vocabulary's tokens of mixed marks are short, so a long
 * chain of common pairs (`=>=>>=>`, `]}]]}}`) is about two marks a token, where 0.2 a change read it
 * 2.3x low. Real code's runs (`"},{"`, `));`) are shorter than that.
 */
const MARK_MIN_TOKENS = 0.5
const MARK_FREE_CHANGES = 3

const COMMON_PAIRS = new Set(
  // JSON, then code: each adjacent pair of each entry.
  [
    '":',
    '",',
    ':"',
    ',"',
    ':{',
    ':[',
    '{"',
    '"}',
    '["',
    '"]',
    '},',
    '],',
    '}]',
    ']}',
    '();',
    '));',
    ');',
    '),',
    ').',
    '()',
    '{}',
    '[]',
    '://',
    '=>',
    '->',
    '</',
    '/>',
    '!=',
    '<=',
    '>=',
    '*/',
    '/*',
    '${',
    '}}',
    '{{',
    "',",
    "')",
    '")',
    "':",
  ].flatMap((p) => [...p].slice(1).map((c, i) => p.charCodeAt(i) * 128 + c.charCodeAt(0))),
)

/**
 * Cost of a run of marks from `i` (plus trailing newlines) in `out.end`; returns the index after it.
 * `spaced`: a space came right before the run (the caller read it).
 */
function markRun(text: string, i: number, spaced: boolean, w: EstimatorWeights, out: { end: number }): number {
  let cost = 0
  let j = i
  let first = true
  let previous = -1
  // The run of one mark being read: its length and whether a space came before it.
  let run = 0
  let runSpaced = false
  // Changes of mark after the first mark, and what they cost (MARK_MIN_TOKENS).
  let changes = 0
  let changeCost = 0
  for (; j < text.length; j++) {
    const c = text.charCodeAt(j)
    const cls = CLASS[c] as number
    if (cls !== PUNCT && cls !== CJK_PUNCT && cls !== SYMBOL) break
    if (c >= 0xd800 && c <= 0xdfff && lone(text, j)) {
      cost += 1 // read as U+FFFD
      run = 0
    } else if (
      cls === PUNCT &&
      !first &&
      CLASS[previous] === PUNCT &&
      MARK_INDEX[c]! >= 0 &&
      MARK_INDEX[previous]! >= 0
    ) {
      const index = MARK_INDEX[c] as number
      if (c === previous) {
        const more = markStretchTokens(index, run + 1, runSpaced) - markStretchTokens(index, run, runSpaced)
        cost += more
        if (run === 1) {
          changes++
          changeCost += more
        }
        run++
      } else {
        const more = nextMarkCost(previous, c, run > 1, w)
        cost += more
        changes++
        changeCost += more
        run = 1
        runSpaced = false
      }
    } else if (pairedSymbol(c)) {
      // A symbol no token holds beside the one before it (the space before the run, for the first) nor
      // beside the one after it in the run (or the newline after the run): its own tokens. After a
      // space, what the space adds (` ▓` is two tokens).
      const after = j + 1 < text.length ? text.charCodeAt(j + 1) : -1
      const apart =
        !(first ? spaced && symbolJoins(32, c) : symbolJoins(previous, c)) &&
        !(after >= 0 && inMarkRun(CLASS[after] as number) && symbolJoins(c, after))
      cost += (apart ? aloneTokens(c) : markCost(c, cls, first, w)) + (first && spaced ? spacedExtra(c) : 0)
      run = 0
    } else {
      cost +=
        cls === PUNCT && !first && previous >= 0x80 && !symbolJoins(previous, c)
          ? w.punctFirst
          : markCost(c, cls, first, w)
      run = cls === PUNCT ? 1 : 0
      runSpaced = first && spaced
    }
    first = false
    previous = c
  }
  if (changes > MARK_FREE_CHANGES) cost += Math.max(0, MARK_MIN_TOKENS * (changes - MARK_FREE_CHANGES) - changeCost)
  // One letter priced as a symbol, alone: its own tokens (and what a space before it adds), as any
  // letter alone (letterRun).
  if (j === i + 1 && ((SYMBOL_LETTER[previous >> 3] as number) & (1 << (previous & 7))) !== 0)
    cost = Math.max(cost, aloneTokens(previous) + (spaced ? spacedExtra(previous) : 0))
  const newlines = j
  while (j < text.length && classAt(text, j) === NEWLINE) j++
  // The newlines after marks merge with them while they are few, when the vocabulary has the last
  // mark (or run of it) with them (MARK_NEWLINE_MERGES: `;\n` yes, `^\n` and `+++\n` no; `;\r\n` yes,
  // `=\r\n` no); a long run costs what it costs.
  const crlf = j - newlines === 2 && text.charCodeAt(newlines) === 13 && text.charCodeAt(j - 1) === 10
  if (j - newlines > 2) cost += whitespaceCost(text, newlines, j, w)
  else if (j > newlines && run > 0 && (crlf || (text.charCodeAt(newlines) === 10 && text.charCodeAt(j - 1) === 10))) {
    const merges = MARK_NEWLINE_MERGES[MARK_INDEX[previous] as number] as number
    const merged = crlf
      ? run <= 4 && merges & (1 << (4 + run))
      : j - newlines === 1
        ? run <= 4 && merges & (1 << (run - 1))
        : run === 1 && merges & 16
    if (!merged) {
      // The newline often takes the run's last mark (`,,,,,,,,\n` is `,,,,` `,,,` `,\n`).
      const index = MARK_INDEX[previous] as number
      cost +=
        run > 1
          ? Math.max(1, 1 + markStretchTokens(index, run - 1, runSpaced) - markStretchTokens(index, run, runSpaced))
          : 1
    }
  } else if (j > newlines && pairedSymbol(previous) && !symbolJoins(previous, text.charCodeAt(newlines))) {
    // A newline no token holds after the symbol before it is a token of its own (`▓\n` is two, `。\n` one).
    cost += 1
  } else if (j > newlines && text.charCodeAt(j - 1) === 13) {
    // A `\r` last (`((((\r`): no mark merges with it, its own token (read free, 1.4x low).
    cost += whitespaceCost(text, newlines, j, w)
  }
  out.end = cost
  return j
}

/** Whether a character of this class continues a run of marks (markRun), newlines after it included. */
const inMarkRun = (cls: number): boolean => cls === PUNCT || cls === CJK_PUNCT || cls === SYMBOL || cls === NEWLINE

/** Estimated tokens of a text alone (no chat template). 0 for ''. */
export function estimateTextTokens(text: string): number {
  return estimateTextTokensWith(text, DEFAULT_WEIGHTS)
}

function contentTokens(content: unknown): number {
  if (typeof content === 'string') return estimateTextTokens(content)
  if (Array.isArray(content)) {
    let sum = 0
    for (const part of content) sum += partTokens(part)
    return sum
  }
  if (content === null || content === undefined) return 0
  return estimateTextTokens(jsonText(content))
}

/**
 * A value as the JSON text a request would carry it, for counting: '' for what JSON leaves out
 * (undefined, functions, symbols), and `String(value)` for what it cannot write (a BigInt, a cycle).
 * The estimate is public API: odd input gets a count, never a TypeError.
 */
function jsonText(value: unknown): string {
  try {
    return JSON.stringify(value) ?? ''
  } catch {
    return String(value)
  }
}

/**
 * Input tokens of a non-text content part, which cannot be counted from its URL or data. These are
 * upper bounds of Qwen's defaults where Qwen documents one: an image is at most 1,280 tokens
 * (max_pixels 1,003,520 at 28 x 28 pixels a token), 16,384 with `vl_high_resolution_images`; a frame
 * of a `video` list counts as an image. A video file and an audio clip have no documented bound: a
 * flat allowance (settlement corrects it; an app that sends long media should plug in its estimator).
 */
export const IMAGE_PART_TOKENS = 1_280
export const HIGH_RES_IMAGE_PART_TOKENS = 16_384
export const VIDEO_URL_PART_TOKENS = 16_384
export const AUDIO_PART_TOKENS = 4_096
/** Any other part type (validation refuses unknown types; a custom path may still send one). */
const OTHER_PART_TOKENS = 1_280

/** Images a content part holds: 1 for image_url, the frame count of a `video` list, 0 otherwise. */
function imagesIn(part: { type?: unknown; video?: unknown }): number {
  if (part.type === 'image_url') return 1
  if (part.type === 'video' && Array.isArray(part.video)) return part.video.length
  return 0
}

/**
 * A part's tokens: every payload it carries counts, whatever its `type`. Qwen reads a part by its
 * type, so a field another type would read (a stray `text: ''` on an image) must not hide the media.
 */
function partTokens(part: unknown): number {
  if (typeof part === 'string') return estimateTextTokens(part)
  if (!part || typeof part !== 'object') return 0
  const p = part as { type?: unknown; text?: unknown; refusal?: unknown; video?: unknown }
  let sum = imagesIn(p) * IMAGE_PART_TOKENS
  if (typeof p.text === 'string') sum += estimateTextTokens(p.text)
  if (typeof p.refusal === 'string') sum += estimateTextTokens(p.refusal)
  if (p.type === 'video_url' || (p.type === 'video' && !Array.isArray(p.video))) sum += VIDEO_URL_PART_TOKENS
  else if (p.type === 'input_audio') sum += AUDIO_PART_TOKENS
  else if (p.type !== undefined && !KNOWN_PART_TYPES.has(p.type)) sum += OTHER_PART_TOKENS
  return sum
}

/** Part types priced above by what they hold. */
const KNOWN_PART_TYPES = new Set<unknown>(['text', 'refusal', 'image_url', 'video', 'video_url', 'input_audio'])

/**
 * A message's tokens: the template's wrapping, its content, and every other field Qwen's template
 * renders into the prompt: `name`, tool calls (as JSON inside <tool_call> tags, ~4 tokens of wrapping
 * each), the legacy `function_call` alike, and `reasoning_content` (Qwen3's template renders an
 * assistant turn's reasoning after the last user message; counted wherever it is, the safe side).
 */
function messageTokens(message: ChatMessageLike): number {
  if (typeof message !== 'object' || message === null) return MESSAGE_OVERHEAD_TOKENS
  let sum = MESSAGE_OVERHEAD_TOKENS + contentTokens(message.content)
  if (typeof message.name === 'string') sum += estimateTextTokens(message.name) + 1
  if (Array.isArray(message.tool_calls)) {
    for (const call of message.tool_calls) sum += estimateTextTokens(jsonText(call)) + 4
  }
  if (message.function_call !== undefined && message.function_call !== null)
    sum += estimateTextTokens(jsonText(message.function_call)) + 4
  if (message.reasoning_content !== undefined && message.reasoning_content !== null)
    sum += contentTokens(message.reasoning_content)
  return sum
}

/** Prompt tokens of a chat as Qwen's `usage.prompt_tokens` counts them. */
export function estimatePromptTokens(messages: ReadonlyArray<ChatMessageLike>): number {
  let sum = ASSISTANT_PRIMER_TOKENS
  for (const m of messages) sum += messageTokens(m)
  return sum
}

/**
 * Tokens a request's `tools` definitions add to the prompt (rendered as JSON in the system turn).
 * The TokenEstimator interface only sees messages, so callers add this themselves.
 */
export function estimateToolsTokens(tools: unknown): number {
  if (!Array.isArray(tools) || tools.length === 0) return 0
  let sum = 0
  for (const tool of tools) sum += estimateTextTokens(jsonText(tool)) + 2
  // Qwen3's template adds a fixed preamble explaining the <tools> block.
  return sum + 90
}

/** Tokens of a JSON value rendered into the prompt as text. */
function jsonTokens(value: unknown): number {
  if (value === undefined || value === null) return 0
  return estimateTextTokens(typeof value === 'string' ? value : jsonText(value))
}

/**
 * Input tokens a request adds besides its messages (the TokenEstimator only sees messages, so the
 * plan adds these whatever the estimator): definitions of `tools` and of the deprecated `functions`,
 * a `tool_choice` object, `response_format` (a JSON schema is rendered into the prompt), a
 * `prediction`, and with `vl_high_resolution_images: true` the extra of every image over
 * IMAGE_PART_TOKENS. Field shapes are validation's job: anything odd counts as its JSON text.
 */
export function estimateRequestExtrasTokens(request: Readonly<Record<string, unknown>>): number {
  let sum = estimateToolsTokens(request.tools) + estimateToolsTokens(request.functions)
  if (typeof request.tool_choice === 'object') sum += jsonTokens(request.tool_choice)
  sum += jsonTokens(request.response_format) + jsonTokens(request.prediction)
  if (request.vl_high_resolution_images === true && Array.isArray(request.messages)) {
    let images = 0
    for (const message of request.messages as Array<{ content?: unknown }>) {
      if (!Array.isArray(message?.content)) continue
      for (const part of message.content)
        if (part && typeof part === 'object') images += imagesIn(part as { type?: unknown })
    }
    sum += images * (HIGH_RES_IMAGE_PART_TOKENS - IMAGE_PART_TOKENS)
  }
  return sum
}

/** The built-in estimator (the default of `options.estimator`). */
export function createEstimator(): TokenEstimator {
  return { countPromptTokens: estimatePromptTokens }
}
