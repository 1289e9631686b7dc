// README code blocks are copies of compiled files. Every ```ts block in README.md, packages/*/README.md and
// packages/core/docs/*.md
// must follow a marker line `<!-- snippet: examples/snippets/NAME.ts -->` and equal that file's
// `// #region readme` ... `// #endregion readme` part (or the whole file without markers). The files are
// type-checked by `pnpm typecheck` (strict); test/readme-snippets.test.ts runs the runnable ones.
//
//   node scripts/readme-snippets.mjs           check: print every difference, exit 1 if any
//   node scripts/readme-snippets.mjs --write   copy the snippet files into the READMEs
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MARKER = /^<!-- snippet: (\S+) -->$/
const FENCE = /^```(\S*)\s*$/
const TYPESCRIPT = new Set(['ts', 'typescript', 'tsx'])

/** The README files and core's docs whose TypeScript blocks are checked, relative to the repository root. */
export function readmes(root) {
  const packages = readdirSync(join(root, 'packages')).map((name) => `packages/${name}/README.md`)
  const docs = readdirSync(join(root, 'packages', 'core', 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `packages/core/docs/${name}`)
  return ['README.md', ...packages, ...docs].filter((path) => existsSync(join(root, path)))
}

/** The part of a snippet file a README shows. */
export function shownPart(source) {
  const lines = source.replace(/\r\n/g, '\n').split('\n')
  const start = lines.findIndex((l) => l.trim() === '// #region readme')
  const end = lines.findIndex((l) => l.trim() === '// #endregion readme')
  if (start < 0 && end < 0) return source.replace(/\n+$/, '')
  if (start < 0 || end < start) throw new Error('unbalanced // #region readme markers')
  return lines.slice(start + 1, end).join('\n')
}

/**
 * Walks every README: returns the problems found (`[]` when all is in sync) and, for --write, the
 * READMEs with their blocks replaced by the snippet files.
 */
export function syncSnippets(root) {
  const problems = []
  const rewritten = new Map()
  const used = new Set()
  for (const readme of readmes(root)) {
    const lines = readFileSync(join(root, readme), 'utf8').split('\n')
    const out = []
    for (let i = 0; i < lines.length; i++) {
      const fence = FENCE.exec(lines[i])
      if (!fence || !fence[1]) {
        out.push(lines[i])
        continue
      }
      // An opening fence with a language: copy the block, checking TypeScript ones.
      let end = i + 1
      while (end < lines.length && !/^```\s*$/.test(lines[end])) end++
      const body = lines.slice(i + 1, end).join('\n')
      const marker = MARKER.exec(lines[i - 1] ?? '')
      let replacement = body
      if (TYPESCRIPT.has(fence[1])) {
        if (!marker) {
          problems.push(
            `${readme}:${i + 1}: a TypeScript block without a <!-- snippet: examples/snippets/NAME.ts --> line before it`,
          )
        } else if (!existsSync(join(root, marker[1]))) {
          problems.push(`${readme}:${i}: ${marker[1]} does not exist`)
        } else {
          used.add(marker[1])
          replacement = shownPart(readFileSync(join(root, marker[1]), 'utf8'))
          if (replacement !== body)
            problems.push(
              `${readme}:${i + 1}: differs from ${marker[1]} (run node scripts/readme-snippets.mjs --write)`,
            )
        }
      }
      out.push(lines[i], ...(replacement === '' ? [] : replacement.split('\n')), lines[end] ?? '```')
      i = end
    }
    rewritten.set(readme, out.join('\n'))
  }
  const snippetDir = join(root, 'examples', 'snippets')
  for (const file of readdirSync(snippetDir).filter((f) => f.endsWith('.ts'))) {
    if (!used.has(`examples/snippets/${file}`)) problems.push(`examples/snippets/${file} is shown in no README`)
  }
  return { problems, rewritten }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = fileURLToPath(new URL('..', import.meta.url))
  const { problems, rewritten } = syncSnippets(root)
  if (process.argv.includes('--write')) {
    for (const [readme, text] of rewritten) writeFileSync(join(root, readme), text)
    const left = syncSnippets(root).problems
    for (const problem of left) console.error(problem)
    process.exitCode = left.length ? 1 : 0
  } else {
    for (const problem of problems) console.error(problem)
    process.exitCode = problems.length ? 1 : 0
  }
}
