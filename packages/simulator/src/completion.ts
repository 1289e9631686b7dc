import { hashString, seededRandom } from './random.js'

/**
 * Deterministic completions. The text is drawn from a fixed list of short English words, each one
 * token under the counting rule (tokens.ts), and ends with "." (one token), so a completion of N
 * tokens is exactly N pieces and `usage` always agrees with the text. The seed comes from the model
 * and the messages, not from `stream` or `max_tokens`, so a streamed and a plain call of the same chat
 * start with the same words.
 */
const WORDS = (
  'the a of to and in is it that for on with as at by from this be are was can will not we you they ' +
  'model token limit rate quota answer request window second minute queue account guard stream ' +
  'server client retry burst pace share fair user key fast slow small large time data cloud ' +
  'simple clear short long first next last each every other more less only also then now here'
).split(' ')

/** Seed of a chat: FNV-1a over the model and every message's role and text. */
export function chatSeed(model: string, messages: readonly { role?: unknown; content?: unknown }[]): number {
  let h = hashString(model)
  for (const m of messages) {
    h = hashString(typeof m.role === 'string' ? m.role : '', h)
    h = hashString(typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? null), h)
  }
  return h
}

/** The N pieces (one token each) of a completion; joined they make the text. */
export function completionPieces(seed: number, tokens: number): string[] {
  const random = seededRandom(seed)
  const pieces = new Array<string>(tokens)
  const words = tokens > 1 ? tokens - 1 : tokens
  for (let i = 0; i < words; i++) {
    const word = WORDS[Math.floor(random() * WORDS.length)]!
    pieces[i] = i === 0 ? word[0]!.toUpperCase() + word.slice(1) : ' ' + word
  }
  if (tokens > 1) pieces[tokens - 1] = '.'
  return pieces
}

/** Reasoning tokens of a call with `enable_thinking: true`: `thinking_budget`, else this default. */
export const DEFAULT_REASONING_TOKENS = 32

/** Seed of the reasoning text: different from the answer's, same determinism. */
export function reasoningSeed(seed: number): number {
  return hashString('reasoning', seed)
}
