/**
 * What an app sees of the core: no upstream key on the guard object or its type, and the
 * adapter-only helpers on `@qwen-guard/core/adapter`, not on the main entry. The built subpath is
 * checked as published (dist/, through package.json "exports") in both module formats, sharing one
 * copy of the code with the main entry.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { inspect } from 'node:util'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import * as main from '../packages/core/src/index.js'
import * as adapter from '../packages/core/src/adapter.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const SECRET = 'sk-surface-secret-4e1d'
const ADAPTER_ONLY = [
  'adoptGuard',
  'attachLazyClient',
  'isLazyClientAttached',
  'isGuard',
  'knownIdentity',
  'identityOrDefault',
  'requireIdentity',
  'clientGoneSignal',
  'connectionGoneSignal',
  'isClientGone',
  'sendRelayResponse',
  'normalizePrefix',
  'pathUnder',
  'relayBodyOf',
  'checkRelayOptions',
]

/** Runs a tiny program in a fresh Node process from an example folder (a real consumer of the packages). */
function run(program: string, type: 'module' | 'commonjs'): unknown {
  const out = execFileSync(
    process.execPath,
    [type === 'module' ? '--input-type=module' : '--input-type=commonjs', '-e', program],
    {
      cwd: `${root}examples/chat-backend`,
      encoding: 'utf8',
    },
  )
  return JSON.parse(out)
}

beforeAll(() => {
  if (!existsSync(`${root}packages/core/dist/adapter.cjs`))
    execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: root })
}, 120_000)

describe('the public Guard', () => {
  it('holds no options: nothing with the upstream key is enumerable, serialised or inspected', async () => {
    const guard = main.createGuard({ upstream: { apiKey: SECRET } })
    expect('options' in guard).toBe(false)
    expect(Object.keys(guard).sort()).toEqual([
      'call',
      'check',
      'client',
      'close',
      'fetch',
      'metrics',
      'models',
      'on',
      'state',
      'usageReport',
    ])
    expect(JSON.stringify(guard) ?? '').not.toContain(SECRET)
    expect(inspect(guard, { depth: 10 })).not.toContain(SECRET)
    // The relay still reads what it needs from a guard made by createGuard, and refuses anything else.
    expect(typeof main.createRelay(guard)).toBe('function')
    expect(() => main.createRelay({ call: () => undefined } as unknown as main.Guard)).toThrow(/made by createGuard/)
    expect(typeof main.createNodeRelay(guard, { prefix: '/v1' })).toBe('function')
    expect(() => main.createNodeRelay({ call: () => undefined } as unknown as main.Guard)).toThrow(
      /made by createGuard/,
    )
    await guard.close()
  })
})

describe('@qwen-guard/core/adapter', () => {
  it('has the adapter helpers, which the main entry no longer exports', () => {
    expect(Object.keys(adapter).sort()).toEqual([...ADAPTER_ONLY].sort())
    for (const name of ADAPTER_ONLY) expect(Object.keys(main)).not.toContain(name)
  })

  for (const type of ['module', 'commonjs'] as const) {
    it(`resolves when built (${type}) and shares one copy of the code with the main entry`, () => {
      const load =
        type === 'module'
          ? `const core = await import('@qwen-guard/core'); const adapter = await import('@qwen-guard/core/adapter');`
          : `const core = require('@qwen-guard/core'); const adapter = require('@qwen-guard/core/adapter');`
      const program = `${load}
        const { guard } = adapter.adoptGuard({ upstream: { apiKey: '${SECRET}' }, quotas: { user: { rpm: 0 } } }, {}, () => ({ user: 'x' }));
        guard.call({ user: 'u1' }, { model: 'qwen-plus', messages: [{ role: 'user', content: 'Hi' }] }).then(
          () => console.log(JSON.stringify({ refused: false })),
          (error) => console.log(JSON.stringify({
            refused: true,
            sameClass: error instanceof core.QwenGuardError,
            mainHasAdapter: Object.keys(core).includes('adoptGuard'),
            adapter: Object.keys(adapter).filter((k) => k !== 'default').sort(),
          })),
        ).finally(() => guard.close())`
      expect(run(program, type)).toEqual({
        refused: true,
        sameClass: true,
        mainHasAdapter: false,
        adapter: [...ADAPTER_ONLY].sort(),
      })
    })
  }
})
