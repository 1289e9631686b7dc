/**
 * A fast, script-aware estimate of Qwen3 token counts (byte-level BPE, ~151k vocabulary), tuned on
 * shared/data/qwen-token-counts.json. It needs no vocabulary (the real one costs ~84 MB on disk and
 * ~240 MB of memory): one pass over the UTF-16 code units, summing a weight per run of one script.
 * Settlement from `usage` corrects whatever it gets wrong; an under-estimate is the risky side
 * (it reserves too little), so the weights lean slightly high. Accuracy: docs/estimator.md.
 */
import type { ChatMessageLike, TokenEstimator } from './types.js'

/** Chat template costs (QWEN-FACTS section 6): `<|im_start|>role\n … <|im_end|>\n` and the assistant prefix. */
export const MESSAGE_OVERHEAD_TOKENS = 5
export const ASSISTANT_PRIMER_TOKENS = 3

// Weights, in tokens. Why each value: see docs/estimator.md (fitted on the corpus, rounded up).
const W = {
  /** A Latin word of up to WORD_CHARS letters is usually one token (with its leading space). */
  word: 1,
  wordChars: 6,
  /** Each further letter of a long word. */
  extraLetter: 0.25,
  /** An upper-case letter inside a word (camelCase) starts a new piece. */
  innerCapital: 0.7,
  digit: 1,
  han: 0.66,
  hangul: 0.8,
  kana: 0.75,
  /** A run of ASCII punctuation: first mark, then each further mark. */
  punctFirst: 1,
  punctMore: 0.6,
  /** Whitespace other than a single space (newlines, indentation): one per run. */
  spaceRun: 1,
  /** Full-width and CJK punctuation. */
  cjkPunct: 1,
  /** Anything else (emoji, rare scripts): per UTF-8 byte. */
  otherByte: 0.45,
}

const enum Kind {
  None,
  Letter,
  Digit,
  Space,
  Punct,
  Han,
  Hangul,
  Kana,
  CjkPunct,
  Other,
}

function isAsciiLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
}

function kindOf(c: number): Kind {
  if (c < 128) {
    if (isAsciiLetter(c)) return Kind.Letter
    if (c >= 48 && c <= 57) return Kind.Digit
    if (c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12) return Kind.Space
    return Kind.Punct
  }
  if ((c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0xf900 && c <= 0xfaff)) return Kind.Han
  if ((c >= 0xac00 && c <= 0xd7af) || (c >= 0x1100 && c <= 0x11ff) || (c >= 0x3130 && c <= 0x318f)) return Kind.Hangul
  if (c >= 0x3040 && c <= 0x30ff) return Kind.Kana
  if ((c >= 0x3000 && c <= 0x303f) || (c >= 0xff00 && c <= 0xffef)) return Kind.CjkPunct
  // Latin-1 and Latin Extended letters (é, ß, ł): part of a word, though rarer merges.
  if (c >= 0xc0 && c <= 0x24f && c !== 0xd7 && c !== 0xf7) return Kind.Letter
  if (c === 0xa0 || c === 0x3000) return Kind.Space
  return Kind.Other
}

/** UTF-8 length of the code unit at i (a surrogate pair counts 4 on its high half, 0 on the low). */
function utf8Bytes(c: number): number {
  if (c < 0x80) return 1
  if (c < 0x800) return 2
  if (c >= 0xd800 && c <= 0xdbff) return 4
  if (c >= 0xdc00 && c <= 0xdfff) return 0
  return 3
}

/** Estimated tokens of a text alone (no chat template). 0 for ''. */
export function estimateTextTokens(text: string): number {
  let total = 0
  let wordLen = 0
  let punctRun = 0
  let spaceRun = 0
  let prev = Kind.None
  let prevLower = false
  const endWord = (): void => {
    if (wordLen > 0) total += W.word + Math.max(0, wordLen - W.wordChars) * W.extraLetter
    wordLen = 0
  }
  const endSpace = (beforeWord: boolean): void => {
    // A single space is merged into the next word's token; other runs cost one token.
    if (spaceRun > 1 || (spaceRun === 1 && !beforeWord)) total += W.spaceRun
    spaceRun = 0
  }
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    const kind = kindOf(c)
    if (kind !== Kind.Letter) endWord()
    if (kind !== Kind.Punct) punctRun = 0
    if (kind !== Kind.Space && spaceRun > 0) endSpace(kind === Kind.Letter || kind === Kind.Punct)
    switch (kind) {
      case Kind.Letter: {
        const upper = c >= 65 && c <= 90
        if (wordLen > 0 && upper && prevLower) total += W.innerCapital
        prevLower = !upper
        wordLen++
        break
      }
      case Kind.Digit:
        total += W.digit
        break
      case Kind.Space:
        spaceRun += c === 32 ? 1 : 2
        break
      case Kind.Punct:
        total += punctRun === 0 ? W.punctFirst : W.punctMore
        punctRun++
        break
      case Kind.Han:
        total += W.han
        break
      case Kind.Hangul:
        total += W.hangul
        break
      case Kind.Kana:
        total += W.kana
        break
      case Kind.CjkPunct:
        total += W.cjkPunct
        break
      default:
        total += utf8Bytes(c) * W.otherByte
    }
    prev = kind
  }
  endWord()
  if (spaceRun > 0) endSpace(false)
  void prev
  return Math.ceil(total)
}

function contentTokens(content: unknown): number {
  if (typeof content === 'string') return estimateTextTokens(content)
  if (Array.isArray(content)) {
    let sum = 0
    for (const part of content) sum += partTokens(part)
    return sum
  }
  if (content === null || content === undefined) return 0
  return estimateTextTokens(JSON.stringify(content))
}

/** Text parts count as text; images and audio cannot be estimated from the URL, so a flat cost. */
const NON_TEXT_PART_TOKENS = 256

function partTokens(part: unknown): number {
  if (typeof part === 'string') return estimateTextTokens(part)
  if (part && typeof part === 'object') {
    const p = part as { type?: unknown; text?: unknown; refusal?: unknown }
    if (typeof p.text === 'string') return estimateTextTokens(p.text)
    if (typeof p.refusal === 'string') return estimateTextTokens(p.refusal)
    if (p.type !== undefined) return NON_TEXT_PART_TOKENS
  }
  return 0
}

function messageTokens(message: ChatMessageLike): number {
  let sum = MESSAGE_OVERHEAD_TOKENS + contentTokens(message.content)
  if (typeof message.name === 'string') sum += estimateTextTokens(message.name) + 1
  // Qwen's template renders tool calls as JSON inside <tool_call> tags (~4 tokens of wrapping each).
  if (Array.isArray(message.tool_calls)) {
    for (const call of message.tool_calls) sum += estimateTextTokens(JSON.stringify(call)) + 4
  }
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
  for (const tool of tools) sum += estimateTextTokens(JSON.stringify(tool)) + 2
  // Qwen3's template adds a fixed preamble explaining the <tools> block.
  return sum + 90
}

/** The built-in estimator (the default of `options.estimator`). */
export function createEstimator(): TokenEstimator {
  return { countPromptTokens: estimatePromptTokens }
}
