/**
 * The packages as a user gets them: every package is packed (`pnpm pack`), the tarballs are installed
 * with npm into fresh folders OUTSIDE the workspace (under the OS temp dir) together with express, koa
 * and the app's own openai, once at the NEWEST openai 6.x and once at the LOWEST the peer range allows.
 * In each folder:
 *  - an ESM app (`import`, the dist/*.js build) and a CommonJS app (`require`, the dist/*.cjs build) run
 *    the same behavioural suite (test/pack-install/suite.cjs) against the installed simulator on
 *    loopback: a refusal through guard.client() is a QwenGuardError with scope, dimension and
 *    retryAfterMs and an instance of the app's OpenAI.APIError; Express and Koa answer a refusal with
 *    429, Retry-After, retry-after-ms, RateLimit fields and an OpenAI-shaped JSON body; the relays answer
 *    the real openai SDK. Both formats expose the same exports (this replaces the old dual-format test).
 *  - strict TypeScript without skipLibCheck compiles an ESM and a CommonJS app that pass req.qwen,
 *    ctx.qwen and guard.client() where the app's `OpenAI` is expected;
 *  - exactly one copy of openai is installed (it is a peer dependency).
 * Both apps also estimate the prompts of test/pack-install/estimates.cjs, which must come out as src/'s.
 * In the newest folder also: LICENSE and README in every package, README links that resolve inside the
 * installed packages, no workspace: ranges, and the `qwen-sim` bin through npx.
 * The core tarball: under 800 KB, its estimator tables once (dist/vocabulary-tables.bin, which the ESM
 * and the CommonJS chunk both read, not base64 inside each); installed with pnpm (a symlinked
 * node_modules) in a third folder, `import` and `require` estimate those prompts as src/ does.
 */
import { execFile, spawn } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as sourceCore from '../packages/core/src/index.js'
import { parseVocabularyTables } from '../packages/core/src/packed-tables.js'
import { installEnv } from './support/install-env.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const fixtures = fileURLToPath(new URL('./pack-install/', import.meta.url))
const PACKAGES = ['core', 'express', 'koa', 'simulator'] as const
/** The lowest openai the peer range allows (packages/core/package.json: ^6.0.0). CI tests it and the newest 6.x. */
const LOWEST_OPENAI = '6.0.0'
const VARIANTS = { newest: 'openai@^6', lowest: `openai@${LOWEST_OPENAI}` } as const
type Variant = keyof typeof VARIANTS
/**
 * The packed core's bound. 2026-12-02: 739 KB, of which the estimator's tables 406 KB (gzip cannot
 * shrink them: most are Brotli) and the code of the two builds 197 KB; with the tables inside both
 * builds (base64) it was 1.17 MB.
 */
const CORE_TARBALL_MAX_BYTES = 800_000

const { estimates } = createRequire(import.meta.url)('./pack-install/estimates.cjs') as {
  estimates: (core: typeof sourceCore) => Record<string, number>
}
/** What src/ estimates for the prompts of estimates.cjs: every installed copy must say the same. */
const sourceEstimates = estimates(sourceCore)

const npmEnv = installEnv()

let work = ''
const typeChecks: Partial<Record<Variant, Promise<void>>> = {}

/** Two programs, as two apps' compilers: one sees the ESM declarations, the other the CommonJS ones. */
async function typeCheck(variant: Variant): Promise<void> {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const project of ['tsconfig.json', 'tsconfig.cjs.json']) {
    await run(process.execPath, [tsc, '-p', project], { cwd: appDir(variant) }).catch((err: { stdout?: string }) => {
      throw new Error(`tsc -p ${project} failed in ${variant}:\n${err.stdout ?? ''}`)
    })
  }
}
const appDir = (variant: Variant) => join(work, variant)
const installLog: Record<string, string> = {}
let coreTarball = ''
/** A folder where pnpm installed the core tarball: node_modules/@qwen-guard/core links into node_modules/.pnpm. */
const pnpmDir = () => join(work, 'pnpm')

beforeAll(async () => {
  if (PACKAGES.some((name) => !existsSync(join(root, 'packages', name, 'dist', 'index.cjs')))) {
    await run(process.execPath, ['scripts/build.mjs'], { cwd: root })
  }
  work = mkdtempSync(join(tmpdir(), 'qwen-guard-pack-'))
  const tarballs = join(work, 'tarballs')
  mkdirSync(tarballs)
  for (const name of PACKAGES) {
    await run('pnpm', ['pack', '--pack-destination', tarballs], { cwd: join(root, 'packages', name), env: npmEnv })
  }
  const tgz = readdirSync(tarballs).map((file) => join(tarballs, file))
  expect(tgz).toHaveLength(PACKAGES.length)
  coreTarball = tgz.find((file) => /qwen-guard-core-[^/]*\.tgz$/.test(file))!

  const pnpmInstall = (async () => {
    mkdirSync(pnpmDir())
    writeFileSync(join(pnpmDir(), 'package.json'), JSON.stringify({ name: 'qwen-guard-outside-pnpm', private: true }))
    writeFileSync(join(pnpmDir(), 'estimates.cjs'), readFileSync(join(fixtures, 'estimates.cjs')))
    await run('pnpm', ['add', '--prefer-offline', '--reporter=silent', coreTarball, VARIANTS.newest], {
      cwd: pnpmDir(),
      env: npmEnv,
    })
  })()

  await Promise.all([
    pnpmInstall,
    ...(Object.keys(VARIANTS) as Variant[]).map(async (variant) => {
      const dir = appDir(variant)
      mkdirSync(dir)
      cpSync(fixtures, dir, { recursive: true })
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `qwen-guard-outside-${variant}`, private: true }))
      const { stderr } = await run(
        'npm',
        [
          'install',
          '--no-audit',
          '--no-fund',
          '--prefer-offline',
          '--loglevel=warn',
          ...tgz,
          VARIANTS[variant],
          // No ioredis: an app on the memory store compiles the guard's types without it (strict, no skipLibCheck).
          'express@^5',
          'koa@^3',
          '@types/express@^5',
          '@types/koa@^3',
          '@types/node@^20',
        ],
        { cwd: dir, env: npmEnv, maxBuffer: 16 << 20 },
      )
      installLog[variant] = stderr
      // The type checks are the slow part (CPU): start them now, beside the other install and the apps.
      typeChecks[variant] = typeCheck(variant)
      typeChecks[variant].catch(() => {}) // awaited (and reported) by its test
    }),
  ])
}, 300_000)

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true })
})

interface SuiteResult {
  format: 'esm' | 'cjs'
  resolved: Record<string, string>
  exports: Record<string, string[]>
  estimates: Record<string, number>
  checks: string[]
  failures: string[]
}

async function runApp(variant: Variant, file: 'app.mjs' | 'app.cjs'): Promise<SuiteResult> {
  const output = await run(process.execPath, [file], { cwd: appDir(variant), env: npmEnv, timeout: 60_000 }).catch(
    (err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }),
  )
  const last = output.stdout.trim().split('\n').at(-1) ?? ''
  if (!last.startsWith('{')) throw new Error(`${variant}/${file} crashed:\n${output.stderr}${output.stdout}`)
  return JSON.parse(last) as SuiteResult
}

const installedVersion = (variant: Variant, name: string) =>
  (JSON.parse(readFileSync(join(appDir(variant), 'node_modules', name, 'package.json'), 'utf8')) as { version: string })
    .version

/** Every `openai` package folder under node_modules (a second copy would break instanceof and types). */
function openaiCopies(dir: string): string[] {
  const found: string[] = []
  const walk = (modules: string) => {
    if (!existsSync(modules)) return
    for (const entry of readdirSync(modules)) {
      if (entry.startsWith('@')) {
        for (const scoped of readdirSync(join(modules, entry))) walk(join(modules, entry, scoped, 'node_modules'))
        continue
      }
      if (entry === 'openai') found.push(join(modules, entry))
      walk(join(modules, entry, 'node_modules'))
    }
  }
  walk(join(dir, 'node_modules'))
  return found
}

for (const variant of Object.keys(VARIANTS) as Variant[]) {
  describe(`installed from the tarballs, with ${VARIANTS[variant]}`, () => {
    it("installs one copy of openai, the app's own, without peer-dependency complaints", () => {
      expect(openaiCopies(appDir(variant))).toEqual([join(appDir(variant), 'node_modules', 'openai')])
      const version = installedVersion(variant, 'openai')
      if (variant === 'lowest') expect(version).toBe(LOWEST_OPENAI)
      else expect(version).toMatch(/^6\./)
      expect(installLog[variant]).not.toMatch(/ERESOLVE|peer|invalid|missing/i)
    })

    const results: Partial<Record<'esm' | 'cjs', SuiteResult>> = {}
    for (const [format, file] of [
      ['esm', 'app.mjs'],
      ['cjs', 'app.cjs'],
    ] as const) {
      it(`behaves as documented under ${format === 'esm' ? 'import' : 'require'} (${file})`, async () => {
        const result = await runApp(variant, file)
        results[format] = result
        expect(result.failures).toEqual([])
        expect(result.checks).toEqual([
          'core client refusal',
          'metrics without prom-client',
          'express req.qwen refusal answer',
          'express relay answers the openai SDK',
          'koa ctx.qwen refusal answer',
          'koa relay answers the openai SDK',
        ])
        expect(result.estimates).toEqual(sourceEstimates)
        for (const path of Object.values(result.resolved)) {
          const file = path.startsWith('file:') ? fileURLToPath(path) : path
          expect(resolve(file).startsWith(appDir(variant))).toBe(true) // the installed copy, never the workspace
          expect(file).toMatch(format === 'esm' ? /\/dist\/index\.js$/ : /\/dist\/index\.cjs$/)
        }
      }, 90_000)
    }

    it('exposes the same exports under import and require', () => {
      expect(results.esm && results.cjs, 'both apps ran').toBeTruthy()
      expect(results.cjs!.exports).toEqual(results.esm!.exports)
      expect(results.esm!.exports.core).toEqual(
        expect.arrayContaining([
          'createGuard',
          'QwenGuardError',
          'isQwenGuardError',
          'createRelay',
          'validateChatRequest',
        ]),
      )
      expect(results.esm!.exports.express).toContain('qwenGuard')
      expect(results.esm!.exports.koa).toContain('qwenGuard')
      expect(results.esm!.exports.simulator).toContain('startSimulator')
    })

    it('type-checks an ESM and a CommonJS app under strict TypeScript without skipLibCheck', async () => {
      expect(typeChecks[variant], 'started after the install').toBeDefined()
      await typeChecks[variant]
    }, 90_000)
  })
}

describe('the core tarball', () => {
  it(`weighs under ${CORE_TARBALL_MAX_BYTES / 1000} KB and carries the estimator's tables once: dist/vocabulary-tables.bin`, () => {
    expect(statSync(coreTarball).size).toBeLessThan(CORE_TARBALL_MAX_BYTES)
    const dist = join(appDir('newest'), 'node_modules', '@qwen-guard', 'core', 'dist')
    const shipped = readFileSync(join(dist, 'vocabulary-tables.bin'))
    expect(shipped.equals(readFileSync(join(root, 'packages', 'core', 'src', 'vocabulary-tables.bin')))).toBe(true)
    // The largest tables' first bytes as a build would inline them (base64): in no JavaScript file.
    const tables = parseVocabularyTables(shipped)
    const inlined = [tables.LETTER_MERGES!, tables.ONE_TOKEN_WORD_LIST!].map((table) =>
      Buffer.from(table.subarray(0, 48)).toString('base64'),
    )
    const code = readdirSync(dist).filter((file) => /\.c?js$/.test(file))
    expect(code).toEqual(expect.arrayContaining(['index.js', 'index.cjs']))
    for (const file of code) {
      const text = readFileSync(join(dist, file), 'latin1')
      for (const base64 of inlined) expect(text.includes(base64), `${file} holds a table`).toBe(false)
    }
  })

  it('installed by pnpm (a symlinked node_modules), estimates as src/ does under import and require', async () => {
    const linked = join(pnpmDir(), 'node_modules', '@qwen-guard', 'core')
    expect(realpathSync(linked)).toContain(join('node_modules', '.pnpm', '@qwen-guard+core@'))
    const cjs =
      "const { estimates } = require('./estimates.cjs'); const core = require('@qwen-guard/core');" +
      "console.log(JSON.stringify({ where: require.resolve('@qwen-guard/core'), estimates: estimates(core) }))"
    const esm =
      "import { estimates } from './estimates.cjs'; const core = await import('@qwen-guard/core');" +
      "console.log(JSON.stringify({ where: import.meta.resolve('@qwen-guard/core'), estimates: estimates(core) }))"
    for (const [args, built] of [
      [['-e', cjs], /\/dist\/index\.cjs$/],
      [['--input-type=module', '-e', esm], /\/dist\/index\.js$/],
    ] as const) {
      const { stdout } = await run(process.execPath, args, { cwd: pnpmDir(), env: npmEnv })
      const answer = JSON.parse(stdout) as { where: string; estimates: Record<string, number> }
      const where = answer.where.startsWith('file:') ? fileURLToPath(answer.where) : answer.where
      expect(where).toMatch(built)
      expect(realpathSync(where).startsWith(realpathSync(pnpmDir()))).toBe(true) // the installed copy
      expect(answer.estimates).toEqual(sourceEstimates)
    }
  }, 30_000)
})

describe('the installed packages (newest openai)', () => {
  const installed = (name: string) => join(appDir('newest'), 'node_modules', '@qwen-guard', name)

  it('each ship LICENSE, a README whose relative links resolve, and no workspace: ranges', () => {
    for (const name of PACKAGES) {
      const dir = installed(name)
      expect(readFileSync(join(dir, 'LICENSE'), 'utf8')).toMatch(
        /^MIT License\n\nCopyright \(c\) \d{4} qwen-guard contributors/,
      )
      const readme = readFileSync(join(dir, 'README.md'), 'utf8')
      const links = [...readme.matchAll(/\]\(([^)\s]+)\)/g)]
        .map((m) => m[1]!)
        .filter((href) => !/^(https?:|mailto:|#)/.test(href))
      for (const href of links) {
        const target = resolve(dir, href.split('#')[0]!)
        expect(existsSync(target), `${name}/README.md links ${href}`).toBe(true)
      }
      const manifest = readFileSync(join(dir, 'package.json'), 'utf8')
      expect(manifest).not.toMatch(/workspace:/)
      expect(manifest).not.toMatch(/"source"/)
      expect((JSON.parse(manifest) as { license: string }).license).toBe('MIT')
    }
    const core = JSON.parse(readFileSync(join(installed('core'), 'package.json'), 'utf8')) as Record<
      string,
      Record<string, string>
    >
    expect(core.peerDependencies).toEqual({ openai: `^${LOWEST_OPENAI}`, ioredis: '^5.0.0', 'prom-client': '^15.0.0' })
    // ioredis and prom-client are optional peers: an app installs them only for Redis or metrics.
    expect(core.peerDependenciesMeta).toEqual({ ioredis: { optional: true }, 'prom-client': { optional: true } })
    expect(core.dependencies).not.toHaveProperty('openai')
    for (const name of ['express', 'koa']) {
      const manifest = JSON.parse(readFileSync(join(installed(name), 'package.json'), 'utf8')) as Record<
        string,
        Record<string, string>
      >
      expect(manifest.peerDependencies).toHaveProperty('openai', `^${LOWEST_OPENAI}`)
      expect(manifest.dependencies).toEqual({ '@qwen-guard/core': expect.stringMatching(/^\^?\d+\.\d+\.\d+$/) })
    }
  })

  it('npx qwen-sim --help prints the usage and exits 0', async () => {
    const { stdout } = await run('npx', ['qwen-sim', '--help'], { cwd: appDir('newest'), env: npmEnv })
    expect(stdout).toMatch(/^usage: qwen-sim/)
    expect(stdout).toContain('--port N')
  }, 30_000)

  /** Starts `command` in its own process group (npx does not pass signals on) and reads its URL. */
  async function startAndReadUrl(command: string, args: string[]) {
    const child = spawn(command, args, {
      cwd: appDir('newest'),
      env: npmEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
    const url = await new Promise<string>((resolveUrl, reject) => {
      let out = ''
      child.stdout.on('data', (data: Buffer) => {
        out += data.toString()
        const line = out.split('\n').find((l) => l.startsWith('http://'))
        if (line) resolveUrl(line.trim())
      })
      child.once('exit', (code) =>
        reject(new Error(`${command} ${args.join(' ')} exited (${code}) before printing its URL: ${out}`)),
      )
    })
    const stop = async (signal: NodeJS.Signals) => {
      process.kill(-child.pid!, signal)
      return exited
    }
    return { url, stop, exited }
  }

  it('npx qwen-sim --port 0 prints its URL and serves; the bin exits 0 on SIGTERM', async () => {
    const viaNpx = await startAndReadUrl('npx', ['qwen-sim', '--port', '0'])
    try {
      expect(viaNpx.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/compatible-mode\/v1$/)
      const models = await fetch(`${viaNpx.url}/models`, { headers: { authorization: 'Bearer sk-sim' } })
      expect(models.status).toBe(200)
    } finally {
      await viaNpx.stop('SIGTERM')
    }
    const bin = await startAndReadUrl(join(appDir('newest'), 'node_modules', '.bin', 'qwen-sim'), ['--port', '0'])
    expect(await bin.stop('SIGTERM')).toBe(0)
  }, 30_000)
})
