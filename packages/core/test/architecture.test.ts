// ARCHITECTURE.md's module table is the map a newcomer reads first: it must name every source file,
// and only files that exist.
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const sourceFiles = (readdirSync(`${root}src`, { recursive: true }) as string[])
  .map((file) => file.split('\\').join('/'))
  .filter((file) => file.endsWith('.ts'))
  .sort()
const tableRows = [...readFileSync(`${root}ARCHITECTURE.md`, 'utf8').matchAll(/^\| `([^`]+\.ts)` \|/gm)].map(
  (match) => match[1]!,
)

describe('ARCHITECTURE.md', () => {
  it('has a row for every file in src/', () => {
    expect(sourceFiles.length).toBeGreaterThan(40)
    expect(sourceFiles.filter((file) => !tableRows.includes(file))).toEqual([])
  })

  it('has rows only for files that exist, each once', () => {
    expect(tableRows.filter((file) => !sourceFiles.includes(file))).toEqual([])
    expect(new Set(tableRows).size).toBe(tableRows.length)
  })
})

describe('source comments', () => {
  it('quote no timings: measured figures live in bench/RESULTS.md, beside the command that measured them', () => {
    const timed = sourceFiles.filter((file) =>
      /\d\s*(CPU\s+)?(µs|microseconds?)/.test(readFileSync(`${root}src/${file}`, 'utf8')),
    )
    expect(timed).toEqual([])
  })
})
