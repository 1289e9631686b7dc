/**
 * The 4,839 words of three or four Han characters (U+4E00-9FFF) of the Qwen3 vocabulary (HAN_WORDS),
 * and what they bound with the pairs (HAN_PAIRS, which estimate.ts holds): the fewest tokens a run of
 * characters that pair can be.
 */
import { unpacked, vocabularyTables } from './packed-tables.js'

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
  for (const word of new TextDecoder().decode(unpacked(vocabularyTables().HAN_WORDS)).split('\n')) {
    if (word.length === 3) hanTriples.add(hanTripleKey(word.charCodeAt(0), word.charCodeAt(1), word.charCodeAt(2)))
    else hanQuads.add(word)
  }
  return hanTriples
}

/**
 * The fewest tokens the Han characters text[from, to) split into, each a one-token character, a pair
 * (`hanPaired`, HAN_PAIRS) or a word of three or four (HAN_WORDS). BPE ends in such a split, so its count is never
 * lower. For a run whose every two neighbours pair: priced a character at a time it read `你好的`
 * (`你` `好的`) 1.57 where it is two (1.25x low repeated). Linear: four lookups a character.
 */
export function fewestHanTokens(
  text: string,
  from: number,
  to: number,
  hanPaired: (a: number, b: number) => boolean,
): number {
  const triples = hanTriples ?? unpackWords()
  // The usual chain, three characters that pair: one word, or two tokens.
  if (to - from === 3 && hanPaired(text.charCodeAt(from), text.charCodeAt(from + 1)))
    return triples.has(hanTripleKey(text.charCodeAt(from), text.charCodeAt(from + 1), text.charCodeAt(from + 2)))
      ? 1
      : 2
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
