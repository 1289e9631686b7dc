/**
 * Which Han characters (U+4E00-9FFF) are one token together: the 11,535 pairs (HAN_PAIRS) and the
 * 4,839 words of three or four characters (HAN_WORDS) of the Qwen3 vocabulary, and what they bound:
 * the fewest tokens a run of characters that pair can be. estimate.ts prices each Han character with
 * them.
 */
import { pairSet, unpacked } from './packed-tables.js'
import { HAN_PAIRS, HAN_WORDS } from './vocabulary-tables.js'

/**
 * HAN_PAIRS by key (hanPairKey), open addressing (about a third full): a lookup per Han character,
 * faster than a Set's.
 */
const HAN_PAIR_TABLE = new Int32Array(1 << 15)
const hanPairSlot = (key: number): number => Math.imul(key, 0x9e3779b1) >>> 17
for (const code of pairSet(HAN_PAIRS)) {
  const key = hanPairKey(Math.floor(code / 65536), code % 65536)
  let slot = hanPairSlot(key)
  while (HAN_PAIR_TABLE[slot] !== 0) slot = (slot + 1) & 0x7fff
  HAN_PAIR_TABLE[slot] = key
}

/** A pair of U+4E00-9FFF characters as a key of HAN_PAIR_TABLE (never 0). */
function hanPairKey(a: number, b: number): number {
  return (a - 0x4e00) * 0x5200 + (b - 0x4e00) + 1
}

/** Whether the U+4E00-9FFF characters `a` and `b` after it are one token together. */
export function hanPaired(a: number, b: number): boolean {
  const key = hanPairKey(a, b)
  for (let slot = hanPairSlot(key); ; slot = (slot + 1) & 0x7fff) {
    const held = HAN_PAIR_TABLE[slot] as number
    if (held === key) return true
    if (held === 0) return false
  }
}

/**
 * The words of three characters by key (hanTripleKey: a number, faster than slicing the text), and of
 * four as strings (only chains of five or more need them); unpacked at the first chain that needs them.
 */
let hanTriples: Set<number> | undefined
let hanQuads: Set<string> | undefined
const hanTripleKey = (a: number, b: number, c: number): number =>
  ((a - 0x4e00) * 0x5200 + (b - 0x4e00)) * 0x5200 + (c - 0x4e00)
function unpackWords(): Set<number> {
  hanTriples = new Set()
  hanQuads = new Set()
  for (const word of new TextDecoder().decode(unpacked(HAN_WORDS)).split('\n')) {
    if (word.length === 3) hanTriples.add(hanTripleKey(word.charCodeAt(0), word.charCodeAt(1), word.charCodeAt(2)))
    else hanQuads.add(word)
  }
  return hanTriples
}

/**
 * The fewest tokens the Han characters text[from, to) split into, each a one-token character, a pair
 * (HAN_PAIRS) or a word of three or four (HAN_WORDS). BPE ends in such a split, so its count is never
 * lower. For a run whose every two neighbours pair: priced a character at a time it read `你好的`
 * (`你` `好的`) 1.57 where it is two (1.25x low repeated). Linear: four lookups a character.
 */
export function fewestHanTokens(text: string, from: number, to: number): number {
  const triples = hanTriples ?? unpackWords()
  if (to - from >= fewest.length) fewest = new Int32Array(2 * (to - from + 1))
  // fewest[k]: the fewest tokens of the first k characters.
  fewest[0] = 0
  for (let end = from + 1; end <= to; end++) {
    const k = end - from
    let best = (fewest[k - 1] as number) + 1
    const c = text.charCodeAt(end - 1)
    if (k >= 2 && hanPaired(text.charCodeAt(end - 2), c)) best = Math.min(best, (fewest[k - 2] as number) + 1)
    if (
      k >= 3 &&
      best > (fewest[k - 3] as number) + 1 &&
      triples.has(hanTripleKey(text.charCodeAt(end - 3), text.charCodeAt(end - 2), c))
    )
      best = (fewest[k - 3] as number) + 1
    if (k >= 4 && best > (fewest[k - 4] as number) + 1 && hanQuads!.has(text.slice(end - 4, end)))
      best = (fewest[k - 4] as number) + 1
    fewest[k] = best
  }
  return fewest[to - from] as number
}
let fewest = new Int32Array(64)
