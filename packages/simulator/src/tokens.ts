/**
 * The simulator's token counting rule (the Qwen3 tokenizer's ChatML template), deterministic and cheap. It is an
 * approximation of Qwen's byte-level BPE that treats English, Chinese and code differently:
 *
 * - a run of ASCII letters (a word or identifier): ceil(letters / 8) tokens, so common English
 *   words are one token each (about 5 characters per token with the spaces);
 * - a single space is free (BPE glues it to the next word); any other whitespace run (indentation,
 *   newlines, double spaces) is 1 token;
 * - every digit is 1 token; a run of ASCII punctuation and symbols is ceil(run / 2) tokens (`{"`,
 *   `");` merge in BPE). Punctuation-dense code and JSON come out near 3 characters per token;
 * - CJK characters (Han, kana, Hangul, CJK and full-width punctuation): 2/3 token each, rounded up
 *   per text (about 1.5 characters per token);
 * - any other character (accented Latin, Cyrillic, emoji...): 1 token per code point.
 *
 * A chat costs the sum of its text parts + 5 per message (`<|im_start|>role\n...<|im_end|>\n`) + 3
 * for the assistant prefix. Non-text parts (images, tool calls) count nothing.
 */
export const TOKENS_PER_MESSAGE = 5
export const TOKENS_PER_REPLY = 3
const LETTERS_PER_TOKEN = 8
const SYMBOLS_PER_TOKEN = 2

const enum Kind {
  Letter,
  Space,
  Digit,
  Symbol,
  Other,
}

export function countTextTokens(text: string): number {
  let tokens = 0
  let cjk = 0
  let letters = 0
  let symbols = 0
  let spaces = 0
  let spaceRunIsFree = true
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    const kind = c < 128 ? asciiKind(c) : Kind.Other
    if (kind !== Kind.Letter && letters > 0) {
      tokens += Math.ceil(letters / LETTERS_PER_TOKEN)
      letters = 0
    }
    if (kind !== Kind.Symbol && symbols > 0) {
      tokens += Math.ceil(symbols / SYMBOLS_PER_TOKEN)
      symbols = 0
    }
    if (kind !== Kind.Space && spaces > 0) {
      if (!spaceRunIsFree || spaces > 1) tokens++
      spaces = 0
      spaceRunIsFree = true
    }
    if (kind === Kind.Letter) letters++
    else if (kind === Kind.Space) {
      spaces++
      if (c !== 32) spaceRunIsFree = false
    } else if (kind === Kind.Symbol) symbols++
    else if (c < 128)
      tokens++ // digit
    else if (isCjk(c)) cjk++
    else if (c < 0xdc00 || c > 0xdfff) tokens++ // a low surrogate belongs to the code point already counted
  }
  if (letters > 0) tokens += Math.ceil(letters / LETTERS_PER_TOKEN)
  if (symbols > 0) tokens += Math.ceil(symbols / SYMBOLS_PER_TOKEN)
  if (spaces > 0 && (!spaceRunIsFree || spaces > 1)) tokens++
  return tokens + Math.ceil((cjk * 2) / 3)
}

function asciiKind(c: number): Kind {
  if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90)) return Kind.Letter
  if (c === 32 || c === 9 || c === 10 || c === 13) return Kind.Space
  if (c >= 48 && c <= 57) return Kind.Digit
  return Kind.Symbol
}

function isCjk(c: number): boolean {
  return (
    (c >= 0x4e00 && c <= 0x9fff) || // CJK unified ideographs
    (c >= 0x3400 && c <= 0x4dbf) || // extension A
    (c >= 0x3000 && c <= 0x30ff) || // CJK punctuation, hiragana, katakana
    (c >= 0xac00 && c <= 0xd7af) || // Hangul syllables
    (c >= 0xff00 && c <= 0xffef) // full-width forms
  )
}

/** A chat message as far as counting goes: string content or an array of parts. */
export interface CountableMessage {
  role?: unknown
  content?: unknown
}

/** prompt_tokens of a chat under the rule above. */
export function countPromptTokens(messages: readonly CountableMessage[]): number {
  let tokens = TOKENS_PER_REPLY
  for (const message of messages) tokens += TOKENS_PER_MESSAGE + countContent(message.content)
  return tokens
}

function countContent(content: unknown): number {
  if (typeof content === 'string') return countTextTokens(content)
  if (!Array.isArray(content)) return 0
  let tokens = 0
  for (const part of content) {
    if (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string') {
      tokens += countTextTokens((part as { text: string }).text)
    }
  }
  return tokens
}
