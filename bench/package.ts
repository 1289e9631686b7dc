// `pnpm bench package`: @qwen-guard/core as an app installs it. Packs it (`pnpm pack`, from dist/: run
// `pnpm build` first), installs the tarball with npm and openai into a fresh folder outside the
// workspace, and prints the tarball's size and its unpacked size, then, in RUNS fresh processes per
// format, how long `require('@qwen-guard/core')` and `await import('@qwen-guard/core')` take once
// openai is loaded (wall and CPU), and the first estimates of the process (a Chinese prompt, then an
// English one: a guard prepares the one-token word filter when it is created; here nothing has).
// Medians. BENCH_TARBALLS=a.tgz,b.tgz measures those tarballs instead (one packed at an older commit,
// say), their processes alternating. Goal: the tarball under 800 KB (test/pack-install.test.ts).
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { gunzipSync } from 'node:zlib'
import { installEnv } from '../test/support/install-env.js'

const run = promisify(execFile)
const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const GOAL_BYTES = 800_000
const root = fileURLToPath(new URL('..', import.meta.url))
const env = installEnv()

const ZH = '请用三句话解释一下什么是令牌桶限流，并说明它和滑动窗口有什么不同。'
const EN = 'Explain in three sentences what a token bucket rate limiter is, and how it differs from a sliding window.'
/** One process: openai loaded, then the core timed, then two estimates timed. Prints one JSON line. */
const probe = (load: string) => `
const { performance } = await import('node:perf_hooks')
${load.replace('NAME', "'openai'")}
const cpu = process.cpuUsage()
const t0 = performance.now()
const core = ${load.replace('NAME', "'@qwen-guard/core'")}
const t1 = performance.now()
const loadCpu = process.cpuUsage(cpu)
const zh = core.createEstimator().countPromptTokens([{ role: 'user', content: ${JSON.stringify(ZH)} }])
const t2 = performance.now()
const en = core.createEstimator().countPromptTokens([{ role: 'user', content: ${JSON.stringify(EN)} }])
const t3 = performance.now()
console.log(JSON.stringify({ load: t1 - t0, cpu: (loadCpu.user + loadCpu.system) / 1000, zh: t2 - t1, en: t3 - t2, tokens: [zh, en] }))
`
const FORMATS = {
  require: [
    '--input-type=module',
    '-e',
    `import { createRequire } from 'node:module'\nconst require = createRequire(process.cwd() + '/')\n${probe('require(NAME)')}`,
  ],
  import: ['--input-type=module', '-e', probe('await import(NAME)')],
} as const

interface Probe {
  load: number
  cpu: number
  zh: number
  en: number
  tokens: number[]
}

/** The sizes of the files of a .tgz, summed (tar headers: the size in octal at 124). */
function unpackedBytes(tgz: string): number {
  const tar = gunzipSync(readFileSync(tgz))
  let total = 0
  for (let at = 0; at + 512 <= tar.length; ) {
    const size = parseInt(
      tar
        .toString('latin1', at + 124, at + 136)
        .replace(/\0.*$/, '')
        .trim() || '0',
      8,
    )
    if (tar[at] === 0) break
    if (tar[at + 156] === 0x30 || tar[at + 156] === 0) total += size
    at += 512 + Math.ceil(size / 512) * 512
  }
  return total
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[(values.length - 1) >> 1]!
const work = mkdtempSync(join(tmpdir(), 'qwen-guard-bench-package-'))
try {
  let tarballs = (process.env.BENCH_TARBALLS ?? '').split(',').filter(Boolean)
  if (tarballs.length === 0) {
    await run('pnpm', ['pack', '--pack-destination', work], { cwd: join(root, 'packages', 'core'), env })
    tarballs = readdirSync(work).map((file) => join(work, file))
  }
  const folders = await Promise.all(
    tarballs.map(async (tgz, k) => {
      const dir = join(work, `app-${k}`)
      mkdirSync(dir)
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `bench-package-${k}`, private: true }))
      await run(
        'npm',
        ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tgz, 'openai@^6'],
        {
          cwd: dir,
          env,
        },
      )
      return dir
    }),
  )
  const probes = new Map<string, Probe[]>()
  for (let i = 0; i < RUNS; i++)
    for (const [k, dir] of folders.entries())
      for (const [format, args] of Object.entries(FORMATS)) {
        const { stdout } = await run(process.execPath, [...args], { cwd: dir, env })
        const key = `${k} ${format}`
        probes.set(key, [...(probes.get(key) ?? []), JSON.parse(stdout) as Probe])
      }

  for (const [k, tgz] of tarballs.entries()) {
    const bytes = statSync(tgz).size
    console.log(
      `${basename(tgz)}${tarballs.length > 1 ? ` (${tgz})` : ''}: ${(bytes / 1000).toFixed(1)} kB packed ` +
        `(goal < ${GOAL_BYTES / 1000} kB: ${bytes < GOAL_BYTES ? 'PASS' : 'FAIL'}), ${(unpackedBytes(tgz) / 1000).toFixed(1)} kB unpacked`,
    )
    for (const format of Object.keys(FORMATS)) {
      const runs = probes.get(`${k} ${format}`)!
      const ms = (pick: (p: Probe) => number) => `${median(runs.map(pick)).toFixed(1)} ms`
      console.log(
        `  ${format.padEnd(7)}  load ${ms((p) => p.load)} (CPU ${ms((p) => p.cpu)}), first estimate zh ${ms((p) => p.zh)}, ` +
          `then en ${ms((p) => p.en)}; ${runs[0]!.tokens.join(' and ')} tokens; median of ${runs.length} processes`,
      )
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
