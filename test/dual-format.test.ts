/**
 * Every package, as published (dist/, resolved through its package.json "exports" without the
 * workspace's "source" condition), loads with both `import` and `require`, and exposes the same API.
 * `pnpm test` builds before it runs the suites; this test builds too when dist/ is missing.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const packages = {
  core: ['createGuard', 'QwenGuardError', 'isQwenGuardError', 'createRelay', 'validateChatRequest'],
  express: ['qwenGuard'],
  koa: ['qwenGuard'],
  simulator: ['startSimulator'],
} as const

/** Runs a tiny program in a fresh Node process from the example folder (a real consumer of the packages). */
function exportsSeenBy(program: string, type: 'module' | 'commonjs'): string[] {
  const flag = type === 'module' ? '--input-type=module' : '--input-type=commonjs'
  const out = execFileSync(process.execPath, [flag, '-e', program], {
    cwd: `${root}examples/chat-backend`,
    encoding: 'utf8',
  })
  return JSON.parse(out) as string[]
}

beforeAll(() => {
  if (!existsSync(`${root}packages/core/dist/index.cjs`)) execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: root })
}, 120_000)

describe('published builds', () => {
  for (const [name, names] of Object.entries(packages)) {
    it(`@qwen-guard/${name} loads with import and with require`, () => {
      const specifier = `@qwen-guard/${name}`
      const esm = exportsSeenBy(`const m = await import('${specifier}'); console.log(JSON.stringify(Object.keys(m)))`, 'module')
      const cjs = exportsSeenBy(`console.log(JSON.stringify(Object.keys(require('${specifier}'))))`, 'commonjs')
      for (const exported of names) {
        expect(esm).toContain(exported)
        expect(cjs).toContain(exported)
      }
      expect(new Set(cjs.filter((key) => key !== 'default'))).toEqual(new Set(esm.filter((key) => key !== 'default')))
    })
  }

  it('resolves the built files, not the TypeScript sources, without the "source" condition', () => {
    const resolved = exportsSeenBy(`console.log(JSON.stringify([require.resolve('@qwen-guard/core')]))`, 'commonjs')
    expect(resolved[0]).toMatch(/packages\/core\/dist\/index\.cjs$/)
  })
})
