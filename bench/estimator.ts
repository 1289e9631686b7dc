// `pnpm bench estimator`: accuracy of the built-in token estimator against exact Qwen3 tokenizer
// counts (shared/data/qwen-token-counts.json), per kind, and its throughput.
// Under-estimates are the risky side: the guard reserves estimate + max_tokens before a call, so
// an estimate that is too low lets a call through that the TPM window had no room for
// (settlement from `usage` corrects the count afterwards, but the burst already happened).
import { readFileSync } from 'node:fs'
import { estimatePromptTokens, estimateTextTokens } from '../packages/core/src/estimate.js'
import type { ChatMessageLike } from '../packages/core/src/types.js'

interface Corpus {
  texts: Array<{ kind: string; text: string; tokens: number }>
  chats: Array<{ messages: ChatMessageLike[]; prompt_tokens: number }>
}

// The corpus lives beside the repository (shared/data); QWEN_TOKEN_COUNTS points elsewhere.
const corpusPath = process.env.QWEN_TOKEN_COUNTS ?? new URL('../../shared/data/qwen-token-counts.json', import.meta.url)
const corpus = JSON.parse(readFileSync(corpusPath, 'utf8')) as Corpus

interface Row {
  kind: string
  errors: number[]
  bytes: number
  texts: string[]
}

const rows = new Map<string, Row>()
function add(kind: string, estimate: number, actual: number, text: string): void {
  const row = rows.get(kind) ?? { kind, errors: [], bytes: 0, texts: [] }
  row.errors.push(((estimate - actual) / actual) * 100)
  row.bytes += Buffer.byteLength(text)
  row.texts.push(text)
  rows.set(kind, row)
}

for (const t of corpus.texts) add(t.kind, estimateTextTokens(t.text), t.tokens, t.text)
for (const c of corpus.chats) add('chat', estimatePromptTokens(c.messages), c.prompt_tokens, JSON.stringify(c.messages))

/** MB/s over ~8 MB of this kind's texts, repeated. */
function throughput(texts: string[]): number {
  const joined = texts.join('\n')
  const big = joined.repeat(Math.max(1, Math.ceil(8_000_000 / Buffer.byteLength(joined))))
  const bytes = Buffer.byteLength(big)
  estimateTextTokens(big.slice(0, 100_000)) // warm up
  const start = process.hrtime.bigint()
  let sink = 0
  for (let i = 0; i < 3; i++) sink += estimateTextTokens(big)
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  if (sink < 0) console.log(sink)
  return (3 * bytes) / 1e6 / seconds
}

const fmt = (n: number, digits = 1) => n.toFixed(digits)
const header = ['kind', 'count', 'mean |err| %', 'worst err %', 'bias %', 'side', 'MB/s']
const table: string[][] = [header]
const all: number[] = []
for (const row of rows.values()) {
  const mean = row.errors.reduce((s, e) => s + Math.abs(e), 0) / row.errors.length
  const worst = row.errors.reduce((w, e) => (Math.abs(e) > Math.abs(w) ? e : w), 0)
  const bias = row.errors.reduce((s, e) => s + e, 0) / row.errors.length
  all.push(...row.errors)
  const speed = row.kind === 'chat' ? '' : fmt(throughput(row.texts), 0)
  table.push([
    row.kind,
    String(row.errors.length),
    fmt(mean),
    fmt(worst),
    fmt(bias),
    bias < 0 ? 'UNDER' : 'over',
    speed,
  ])
}
const allMean = all.reduce((s, e) => s + Math.abs(e), 0) / all.length
const allBias = all.reduce((s, e) => s + e, 0) / all.length
table.push([
  'all',
  String(all.length),
  fmt(allMean),
  fmt(all.reduce((w, e) => (Math.abs(e) > Math.abs(w) ? e : w), 0)),
  fmt(allBias),
  allBias < 0 ? 'UNDER' : 'over',
  fmt(throughput(corpus.texts.map((t) => t.text)), 0),
])

const widths = header.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)))
for (const r of table)
  console.log(r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '))
console.log('\nerr % = (estimate - exact) / exact. UNDER = the estimate is low on average for that kind:')
console.log('the risky side, since reservations are made from the estimate before Qwen counts.')

// The hard cases: seeded random texts in 153 kinds (packages/core/test/data/qwen3-fuzz-counts.json),
// where a script-aware estimate can only be wrong. Goal per kind: the estimate at least 1 / 1.3 of
// the exact count in sum (an under-count of at most 30 %); over-counts only cost headroom.
const fuzz = JSON.parse(
  readFileSync(new URL('../packages/core/test/data/qwen3-fuzz-counts.json', import.meta.url), 'utf8'),
) as { texts: Array<{ kind: string; text: string; tokens: number }> }
const byKind = new Map<string, { exact: number; estimate: number }>()
for (const t of fuzz.texts) {
  const k = byKind.get(t.kind) ?? { exact: 0, estimate: 0 }
  k.exact += t.tokens
  k.estimate += estimateTextTokens(t.text)
  byKind.set(t.kind, k)
}
const ratios = [...byKind].map(([kind, k]) => ({ kind, under: k.exact / Math.max(1, k.estimate) }))
const failing = ratios.filter((r) => r.under > 1.3).sort((a, b) => b.under - a.under)
console.log(
  `\nhard cases: ${byKind.size} kinds of random text, ${fuzz.texts.length} texts; kinds under-counted by more than 30 % ` +
    `(goal 0): ${failing.length} (${failing.length === 0 ? 'PASS' : 'FAIL'}). Worst, exact / estimate:`,
)
for (const r of failing.slice(0, 12)) console.log(`  ${r.under.toFixed(2)}  ${r.kind}`)

// Latin-script languages other than English (packages/core/test/data/qwen3-latin-counts.json): goal
// per paragraph, at most 15 % under (the test's bound).
const latin = JSON.parse(
  readFileSync(new URL('../packages/core/test/data/qwen3-latin-counts.json', import.meta.url), 'utf8'),
) as { texts: Array<{ language: string; text: string; tokens: number }> }
const latinRows = latin.texts.map((t) => ({
  language: t.language,
  err: (estimateTextTokens(t.text) - t.tokens) / t.tokens,
}))
const latinUnder = latinRows.filter((r) => r.err < -0.15)
const latinBias =
  latin.texts.reduce((n, t) => n + estimateTextTokens(t.text), 0) / latin.texts.reduce((n, t) => n + t.tokens, 0) - 1
console.log(
  `\nother Latin-script languages: ${latin.texts.length} paragraphs, all together ${fmt(latinBias * 100)} %; ` +
    `more than 15 % under (goal 0): ${latinUnder.length} (${latinUnder.length === 0 ? 'PASS' : 'FAIL'}). Per paragraph, err %:`,
)
for (let i = 0; i < latinRows.length; i += 4)
  console.log(
    '  ' +
      latinRows
        .slice(i, i + 4)
        .map((r) => `${r.language} ${r.err >= 0 ? '+' : ''}${fmt(r.err * 100, 0)}`.padEnd(30))
        .join(''),
  )

// The slowest texts: ones built for the merge replays (merge-replay.ts runs a heap operation a letter
// or byte), 1 MB each, against English prose. A relayed request is at most maxBodyBytes (1 MiB by
// default), so this is the most CPU one call's estimate can take. Goal: under 0.5 s a MB.
const MB = 1_000_000
const worstCases: Array<[string, string]> = [
  ['english prose', 'The quick brown fox jumps over the lazy dog and keeps running. '],
  ['glued English words (thethethe)', 'the'],
  ['glued distinct words', 'makeratelimitquotaworldhello'],
  ['Cyrillic letters, one run', 'абвгдежзиклмнопрстуфхцчшщ'],
  ['whitespace mixes (\\r\\n, spaces, tabs)', ' \r\n\n\t'],
  ['Han characters', '你好的世界和平'],
]
console.log('\nslowest texts, 1 MB of UTF-8 each (goal: < 0.5 s a MB of CPU, one call):')
for (const [name, unit] of worstCases) {
  const text = unit.repeat(Math.ceil(MB / Buffer.byteLength(unit)))
  estimateTextTokens(text.slice(0, 10_000)) // warm up
  let best = Infinity
  for (let i = 0; i < 3; i++) {
    const start = process.hrtime.bigint()
    estimateTextTokens(text)
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9)
  }
  const seconds = best / (Buffer.byteLength(text) / MB)
  console.log(`  ${name.padEnd(40)} ${seconds.toFixed(3)} s/MB  ${seconds < 0.5 ? 'PASS' : 'FAIL'}`)
}
