/**
 * Byte-level BPE replayed on a few symbols: a tokenizer's merges among them, in rank order (generated
 * into vocabulary-tables.ts), applied to a piece of the pre-tokenizer as the tokenizer does, the
 * lowest-ranked pair first, leftmost on a tie. Its count is the piece's exact count. The words of
 * Cyrillic letters (cyrillic-words.ts) and the whitespace pieces (whitespace-pieces.ts) use it.
 */
import { varints } from './packed-tables.js'

/**
 * Merges by their two symbols (left * 65536 + right) -> rank; merge k makes symbol `first` + k. An
 * open-addressed hash table (a Map's lookup was most of a replay's time).
 */
export interface MergeRanks {
  /** Symbols before the first merge's (the bytes the merges start from). */
  first: number
  keys: Int32Array
  ranks: Int32Array
  /** 32 - log2 of the slots: a key's first slot is its multiplicative hash shifted by this. */
  shift: number
}

/** The merges of a table (LEB128 varints: left, right of each, in rank order) over `first` symbols. */
export function mergeRanks(table: Uint8Array, first: number): MergeRanks {
  const symbols = varints(table)
  let slotBits = 4
  while (1 << slotBits < symbols.length * 2) slotBits++ // at most a quarter full
  const keys = new Int32Array(1 << slotBits).fill(-1)
  const ranks = new Int32Array(1 << slotBits)
  const shift = 32 - slotBits
  for (let k = 0; k + 1 < symbols.length; k += 2) {
    const key = (symbols[k] as number) * 65536 + (symbols[k + 1] as number)
    let slot = Math.imul(key, 0x9e3779b1) >>> shift
    while (keys[slot] !== -1) slot = (slot + 1) & (keys.length - 1)
    keys[slot] = key
    ranks[slot] = k / 2
  }
  return { first, keys, ranks, shift }
}

/** The rank of the merge of symbols `left` and `right`, -1 if the tokenizer has none. */
function mergeRank(merges: MergeRanks, left: number, right: number): number {
  const key = left * 65536 + right
  const { keys } = merges
  for (let slot = Math.imul(key, 0x9e3779b1) >>> merges.shift; ; slot = (slot + 1) & (keys.length - 1)) {
    const at = keys[slot] as number
    if (at === key) return merges.ranks[slot] as number
    if (at === -1) return -1
  }
}

/**
 * Pending merges in a binary min-heap, each keyed rank * MERGE_KEY_SPAN + the index of its left
 * symbol: the lowest rank comes first, the leftmost on a tie (indexes keep the piece's order). A key
 * gone stale (a neighbour merged since) is skipped when popped: O(n log n) for n bytes, where
 * rescanning every pair after each merge cost the square (a 200,000-letter run took minutes).
 */
const MERGE_KEY_SPAN = 2 ** 32
// The replay's buffers, kept between pieces and grown to the longest.
let symbols = new Int32Array(64)
let nextOf = new Int32Array(64)
let previousOf = new Int32Array(64)
let heap = new Float64Array(128)
let heapSize = 0
function pushMerge(merges: MergeRanks, left: number, right: number): void {
  const rank = mergeRank(merges, symbols[left] as number, symbols[right] as number)
  if (rank < 0) return
  const key = rank * MERGE_KEY_SPAN + left
  if (heapSize === heap.length) {
    const grown = new Float64Array(heap.length * 2)
    grown.set(heap)
    heap = grown
  }
  let at = heapSize++
  while (at > 0 && (heap[(at - 1) >> 1] as number) > key) {
    heap[at] = heap[(at - 1) >> 1] as number
    at = (at - 1) >> 1
  }
  heap[at] = key
}
function popMerge(): number {
  const top = heap[0] as number
  const last = heap[--heapSize] as number
  let at = 0
  for (;;) {
    let child = 2 * at + 1
    if (child >= heapSize) break
    if (child + 1 < heapSize && (heap[child + 1] as number) < (heap[child] as number)) child++
    if ((heap[child] as number) >= last) break
    heap[at] = heap[child] as number
    at = child
  }
  heap[at] = last
  return top
}

/**
 * Counts of the pieces a text repeats (its words, its indentation): the last `size` counted are kept,
 * forgotten all at once when full (a bounded cache for each kind of replayed piece).
 */
export class PieceCounts {
  private readonly counts = new Map<string, number>()
  constructor(private readonly size: number) {}

  get(piece: string): number | undefined {
    return this.counts.get(piece)
  }

  /** Keeps `tokens` as the count of `piece`, and returns it. */
  add(piece: string, tokens: number): number {
    if (this.counts.size >= this.size) this.counts.clear()
    this.counts.set(piece, tokens)
    return tokens
  }
}

/** The buffer to write a piece's `n` starting symbols into (0 to `first` - 1), before replayMerges. */
export function replaySymbols(n: number): Int32Array {
  if (n > symbols.length) {
    symbols = new Int32Array(n)
    nextOf = new Int32Array(n)
    previousOf = new Int32Array(n)
  }
  return symbols
}

/** The tokens of the `n` symbols written into replaySymbols(n): the merges replayed on them. */
export function replayMerges(merges: MergeRanks, n: number): number {
  // symbols[k]: -1 once merged into the symbol before it. nextOf: the index of the live symbol after
  // (n: none).
  heapSize = 0
  for (let k = 0; k < n; k++) {
    nextOf[k] = k + 1
    previousOf[k] = k - 1
    if (k > 0) pushMerge(merges, k - 1, k)
  }
  let tokens = n
  while (heapSize > 0) {
    const key = popMerge()
    const rank = Math.floor(key / MERGE_KEY_SPAN)
    const left = key - rank * MERGE_KEY_SPAN
    const right = nextOf[left] as number
    if (symbols[left] === -1 || right >= n) continue
    if (mergeRank(merges, symbols[left] as number, symbols[right] as number) !== rank) continue
    symbols[left] = merges.first + rank
    symbols[right] = -1
    const after = nextOf[right] as number
    nextOf[left] = after
    if (after < n) previousOf[after] = left
    tokens--
    if ((previousOf[left] as number) >= 0) pushMerge(merges, previousOf[left] as number, left)
    if (after < n) pushMerge(merges, left, after)
  }
  return tokens
}
