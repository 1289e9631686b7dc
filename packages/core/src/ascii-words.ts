/**
 * The words of ASCII letters that are one token of the Qwen3 vocabulary (68,923, with their leading
 * space or without: ONE_TOKEN_WORD_LIST), as a Bloom filter salted per process, and the tokenizer's
 * merges among ASCII letters, replayed to count a piece that is not one of them (glued words:
 * `thethethe`, `makemake`, a path or URL without separators). estimate.ts prices each word piece
 * with them.
 */
import { brotliDecompressSync } from 'node:zlib'
import { type MergeRanks, mergeRanks, replayMerges, replaySymbols } from './merge-replay.js'
import { LETTER_BYTES, LETTER_MERGES, ONE_TOKEN_WORD_LIST } from './vocabulary-tables.js'

// 32-bit FNV-1a of a piece's characters, of ' ' + piece after a space, from a basis of this process's
// own: the filter below is built with it, so the few words it passes by mistake (which read one token
// each) differ from process to process and cannot be searched for offline.
export const FNV_PRIME = 0x01000193
export const FNV_BASIS = (0x811c9dc5 ^ (crypto.getRandomValues(new Uint32Array(1))[0] as number)) >>> 0
export const FNV_SPACED_BASIS = Math.imul(FNV_BASIS ^ 0x20, FNV_PRIME) >>> 0

/**
 * The one-token words' Bloom filter: 2^21 bits (256 KB, 30 a word) and 10 probes: about 2 in 100,000
 * other words pass by mistake, most of them by a collision of the 32-bit hash (a smaller filter let 3 %
 * pass: a prompt's estimate would move from process to process); built by `prepareWordFilter`
 * (createGuard calls it through prepareEstimator) or on first use, in about 20 ms.
 */
const BLOOM_BITS = 1 << 21
const BLOOM_PROBES = 10
let wordBloom: Uint8Array | undefined

function buildWordBloom(): Uint8Array {
  const bloom = new Uint8Array(BLOOM_BITS / 8)
  const list = brotliDecompressSync(Buffer.from(ONE_TOKEN_WORD_LIST, 'base64')).toString('latin1')
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

/** Builds the filter now rather than on first use; idempotent. */
export function prepareWordFilter(): void {
  wordBloom ??= buildWordBloom()
}

/** Whether a piece with this hash (FNV-1a from FNV_BASIS, or FNV_SPACED_BASIS) is (probably) one token. */
export function oneToken(hash: number): boolean {
  const bloom = (wordBloom ??= buildWordBloom())
  const step = probeStep(hash)
  for (let i = 0; i < BLOOM_PROBES; i++) {
    const at = (hash + Math.imul(i, step)) & (BLOOM_BITS - 1)
    if (((bloom[at >> 3] as number) & (1 << (at & 7))) === 0) return false
  }
  return true
}

/**
 * The tokenizer's merges among the space and the ASCII letters (LETTER_MERGES; merge k makes symbol
 * LETTER_BYTES.length + k), unpacked at the first piece replayed.
 */
let letterMerges: MergeRanks | undefined
/** A character's symbol: 0 the space, 1-26 A-Z, 27-52 a-z. */
const letterSymbol = (c: number): number => (c === 32 ? 0 : c <= 90 ? c - 64 : c - 70)

/**
 * Exact tokens of the word piece of ASCII letters text[from, to), with the space before it when there
 * is one: the tokenizer's merges replayed on it (merge-replay.ts). The split chances (SPLIT_CHANCES)
 * fit words of other languages and random letters, not glued English words, where merges across
 * the words come first: `makemake...` is `mak` `em` `ak` `em`..., two tokens a word (read 12 for
 * 23), `thethethe...` `th` then `eth` a token (read 8 for 30). A piece of one word repeats: the last
 * PIECE_CACHE_WORDS counted are kept.
 */
export function letterPieceTokens(text: string, from: number, to: number): number {
  if (to - from > PIECE_CACHE_LETTERS) return letterPieceMerged(text, from, to)
  const spaced = from > 0 && text.charCodeAt(from - 1) === 32
  const piece = text.slice(spaced ? from - 1 : from, to)
  const known = pieceCache.get(piece)
  if (known !== undefined) return known
  const tokens = letterPieceMerged(text, from, to)
  if (pieceCache.size >= PIECE_CACHE_WORDS) pieceCache.clear()
  pieceCache.set(piece, tokens)
  return tokens
}
const PIECE_CACHE_WORDS = 4_096
/** Pieces up to this many letters are cached (a longer run is no word a text repeats). */
const PIECE_CACHE_LETTERS = 32
const pieceCache = new Map<string, number>()

function letterPieceMerged(text: string, from: number, to: number): number {
  const spaced = from > 0 && text.charCodeAt(from - 1) === 32
  const n = to - from + (spaced ? 1 : 0)
  const symbols = replaySymbols(n)
  let k = 0
  if (spaced) symbols[k++] = 0
  for (let at = from; at < to; at++) symbols[k++] = letterSymbol(text.charCodeAt(at))
  return replayMerges((letterMerges ??= mergeRanks(LETTER_MERGES, LETTER_BYTES.length)), n)
}
