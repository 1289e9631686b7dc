import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { HelpRequested, parseArgs, parseFault, USAGE } from '../src/cli.js'

describe('CLI flags', () => {
  it('map to simulator options', () => {
    const options = parseArgs([
      '--',
      '--port',
      '9000',
      '--time-scale',
      '10',
      '--ttft',
      '300',
      '--per-token',
      '20',
      '--limit',
      'qwen-plus:60:1000',
      '--limit',
      'qwen-max:::5:',
      '--key',
      'sk-a:acme',
      '--key',
      'sk-b:acme',
      '--free-tokens',
      'acme:5000',
      '--state',
      'late:arrears',
      '--key',
      'sk-late:late',
      '--burst',
      '3:1.5',
      '--fault',
      'stream-error,probability=0.25,model=qwen-plus,afterChunks=4',
    ])
    expect(options).toEqual({
      port: 9000,
      timeScale: 10,
      ttftMs: 300,
      perTokenMs: 20,
      limits: { 'qwen-plus': { rpm: 60, tpm: 1000 }, 'qwen-max': { rps: 5 } },
      accounts: [
        { id: 'acme', keys: ['sk-a', 'sk-b'], freeTokens: 5000 },
        { id: 'late', keys: ['sk-late'], state: 'arrears' },
      ],
      burst: { floor: 3, factor: 1.5 },
      faults: [{ kind: 'stream-error', probability: 0.25, model: 'qwen-plus', afterChunks: 4 }],
    })
    expect(parseArgs(['--no-burst'])).toEqual({ port: 8787, burst: false })
    expect(parseArgs(['--state', 'default:free_tier_only']).accounts).toEqual([
      { id: 'default', keys: ['sk-sim'], state: 'free_tier_only' },
    ])
  })

  it('reject unknown flags and malformed values', () => {
    expect(() => parseArgs(['--nope'])).toThrow(/unknown flag/)
    expect(() => parseArgs(['--port', 'x'])).toThrow(/not a number/)
    expect(() => parseFault('hang,times')).toThrow(/key=value/)
  })

  it('prints the URL and exits 0 on SIGTERM', async () => {
    const root = fileURLToPath(new URL('../../..', import.meta.url))
    const child = spawn(
      process.execPath,
      ['--conditions=source', '--import', 'tsx', 'packages/simulator/src/cli.ts', '--port', '0'],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => resolve(d.toString().trim()))
      child.once('exit', () => reject(new Error('exited early')))
    })
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/compatible-mode\/v1$/)
    const models = await fetch(`${url}/models`, { headers: { authorization: 'Bearer sk-sim' } })
    expect(models.status).toBe(200)
    const code = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    expect(await code).toBe(0)
  })
})

describe('CLI help and stray input', () => {
  it('--help and -h ask for the usage; a stray argument is an error naming it', () => {
    expect(() => parseArgs(['--help'])).toThrow(HelpRequested)
    expect(() => parseArgs(['-h'])).toThrow(HelpRequested)
    expect(() => parseArgs(['--port', '0', 'extra'])).toThrow(/unexpected argument extra/)
    expect(() => parseArgs(['--port'])).toThrow(/--port/)
    expect(USAGE).toMatch(/^usage: qwen-sim/)
  })
})
