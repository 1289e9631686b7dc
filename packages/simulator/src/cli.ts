#!/usr/bin/env node
/**
 * The `qwen-sim` command (`pnpm sim -- [flags]` in this repository): runs the simulator until
 * SIGINT/SIGTERM and prints its base URL on stdout. `--help` prints the usage on stdout and exits 0;
 * a bad flag prints the reason and the usage on stderr and exits 2. Flags: see USAGE below.
 *
 * The installed bin is `bin/qwen-sim.js`, a committed shim that calls `main()` of the built file (so a
 * fresh `pnpm install` can link it before anything is built). Run directly (`node dist/cli.js`,
 * `tsx src/cli.ts`), this file starts itself.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs as parseFlags } from 'node:util'
import { startSimulator } from './index.js'
import type { AccountOptions, AccountState, FaultSpec, ModelLimits, SimulatorOptions } from './types.js'

export const USAGE = `usage: qwen-sim [flags]            (in the qwen-guard repository: pnpm sim -- [flags])

Runs a Qwen (DashScope compatible-mode) stand-in on loopback and prints its base URL.

  --port N                 TCP port (default 8787; 0 = any free port)
  --host ADDR              bind address (default 127.0.0.1)
  --time-scale X           simulated ms per real ms (default 1)
  --ttft MS                time to first token, simulated ms (default 0)
  --per-token MS           time per output token, simulated ms (default 0)
  --default-max-tokens N   completion length when a request sets no max_tokens (default 64)
  --limit MODEL:RPM:TPM[:RPS:TPS]   override a model's limits (repeatable; empty fields keep the default)
  --key KEY[:ACCOUNT]      add an API key, of ACCOUNT (default: an account named after the key; repeatable).
                           Without --key: account 'default', key 'sk-sim'.
  --free-tokens ACCOUNT:N  free allowance per model of an account
  --state ACCOUNT:STATE    arrears | free_tier_only
  --no-burst               turn burst protection off
  --burst FLOOR:FACTOR     burst rule parameters
  --fault SPEC             kind[,key=value...], e.g. stream-error,probability=0.1,model=qwen-plus (repeatable)
  --seed N                 seed of fault probabilities
  -h, --help               print this help and exit

Stops cleanly on SIGINT / SIGTERM. Details: the README of @qwen-guard/simulator.`

const FLAGS = {
  port: { type: 'string' },
  host: { type: 'string' },
  'time-scale': { type: 'string' },
  ttft: { type: 'string' },
  'per-token': { type: 'string' },
  'default-max-tokens': { type: 'string' },
  seed: { type: 'string' },
  'no-burst': { type: 'boolean' },
  burst: { type: 'string' },
  limit: { type: 'string', multiple: true },
  key: { type: 'string', multiple: true },
  'free-tokens': { type: 'string', multiple: true },
  state: { type: 'string', multiple: true },
  fault: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const

/** Thrown by parseArgs for `--help` / `-h`: not an error, the caller prints USAGE and exits 0. */
export class HelpRequested extends Error {
  constructor() {
    super('help requested')
    this.name = 'HelpRequested'
  }
}

/**
 * Flags -> simulator options. Throws an Error naming the flag for an unknown flag, a missing or
 * malformed value, or a stray argument; `HelpRequested` for `--help`. A leading `--` (as `pnpm sim --`
 * passes it) is ignored.
 */
export function parseArgs(argv: string[]): SimulatorOptions {
  const args = argv[0] === '--' ? argv.slice(1) : argv
  const { values } = parseFlagsOrExplain(args)
  if (values.help) throw new HelpRequested()

  const options: SimulatorOptions = { port: 8787 }
  if (values.port !== undefined) options.port = num('--port', values.port)
  if (values.host !== undefined) options.host = values.host
  if (values['time-scale'] !== undefined) options.timeScale = num('--time-scale', values['time-scale'])
  if (values.ttft !== undefined) options.ttftMs = num('--ttft', values.ttft)
  if (values['per-token'] !== undefined) options.perTokenMs = num('--per-token', values['per-token'])
  if (values['default-max-tokens'] !== undefined)
    options.defaultMaxTokens = num('--default-max-tokens', values['default-max-tokens'])
  if (values.seed !== undefined) options.seed = num('--seed', values.seed)
  if (values.burst !== undefined) {
    if (values['no-burst']) throw new Error('--burst and --no-burst exclude each other')
    const [floor, factor] = values.burst.split(':')
    options.burst = { floor: optNum('--burst', floor), factor: optNum('--burst', factor) }
  }
  if (values['no-burst']) options.burst = false
  for (const spec of values.limit ?? []) {
    const [model, rpm, tpm, rps, tps] = spec.split(':')
    if (!model) throw new Error('--limit needs MODEL:RPM:TPM[:RPS:TPS]')
    const limits: ModelLimits = {
      rpm: optNum('--limit', rpm),
      tpm: optNum('--limit', tpm),
      rps: optNum('--limit', rps),
      tps: optNum('--limit', tps),
    }
    options.limits = { ...options.limits, [model]: stripUndefined(limits) }
  }

  // Accounts keep the order they are first named in, whichever flag names them.
  const accounts = new Map<string, AccountOptions>()
  const account = (id: string) => {
    let a = accounts.get(id)
    if (!a) accounts.set(id, (a = { id, keys: [] }))
    return a
  }
  for (const { flag, text } of inOrder(args, ['key', 'free-tokens', 'state'], values)) {
    const [first, second] = text.split(':')
    if (flag === 'key') {
      if (!first) throw new Error('--key needs KEY[:ACCOUNT]')
      account(second || first).keys.push(first)
    } else if (flag === 'free-tokens') {
      if (!first) throw new Error('--free-tokens needs ACCOUNT:N')
      account(first).freeTokens = num('--free-tokens', second ?? '')
    } else {
      if (!first || (second !== 'arrears' && second !== 'free_tier_only' && second !== 'ok')) {
        throw new Error('--state needs ACCOUNT:arrears|free_tier_only')
      }
      account(first).state = second as AccountState
    }
  }
  if (accounts.size > 0) {
    const list = [...accounts.values()]
    // --free-tokens / --state without --key configure the default account.
    const def = list.find((a) => a.id === 'default')
    if (def && def.keys.length === 0) def.keys.push('sk-sim')
    options.accounts = list
  }
  if (values.fault) options.faults = values.fault.map(parseFault)
  return options
}

function parseFlagsOrExplain(args: string[]) {
  try {
    return parseFlags({ args, options: FLAGS, strict: true, allowPositionals: false })
  } catch (err) {
    const { code, message } = err as { code?: string; message: string }
    // Node's own messages go on about positionals; name the flag and stop there.
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
      throw new Error(`unknown flag ${/'([^']+)'/.exec(message)?.[1] ?? message}`)
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
      throw new Error(`unexpected argument ${/'([^']+)'/.exec(message)?.[1] ?? message}`)
    throw err
  }
}

/** The values of repeatable flags in command-line order (parseArgs groups them per flag). */
function inOrder(
  args: string[],
  flags: string[],
  values: Record<string, unknown>,
): Array<{ flag: string; text: string }> {
  const queues = new Map(flags.map((flag) => [flag, [...((values[flag] as string[] | undefined) ?? [])]]))
  const out: Array<{ flag: string; text: string }> = []
  for (const arg of args) {
    const flag = arg.startsWith('--') ? arg.slice(2).split('=')[0]! : ''
    const queue = queues.get(flag)
    const text = queue?.shift()
    if (text !== undefined) out.push({ flag, text })
  }
  return out
}

/** `kind,key=value,...`: account, model, probability, times, afterChunks, delayMs, status, code, message. */
export function parseFault(text: string): FaultSpec {
  const [kind, ...pairs] = text.split(',')
  if (!kind) throw new Error(`--fault ${text}: expected kind[,key=value...]`)
  const spec: Record<string, unknown> = { kind }
  for (const pair of pairs) {
    const eq = pair.indexOf('=')
    if (eq < 0) throw new Error(`--fault ${text}: expected key=value, got ${pair}`)
    const key = pair.slice(0, eq)
    const raw = pair.slice(eq + 1)
    spec[key] = ['probability', 'times', 'afterChunks', 'delayMs', 'status'].includes(key)
      ? num(`--fault ${key}`, raw)
      : raw
  }
  return spec as unknown as FaultSpec
}

function num(flag: string, text: string): number {
  const n = Number(text)
  if (text === '' || !Number.isFinite(n)) throw new Error(`${flag}: not a number: ${text}`)
  return n
}

function optNum(flag: string, text: string | undefined): number | undefined {
  return text === undefined || text === '' ? undefined : num(flag, text)
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}

/**
 * Runs the command: starts the simulator and prints its URL, or prints the usage. Resolves once the
 * simulator listens; the process then lives until SIGINT/SIGTERM (exit 0 after closing, 1 if closing
 * failed). Sets `process.exitCode` 0 for `--help`, 2 for a bad flag.
 */
export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  let options: SimulatorOptions
  try {
    options = parseArgs(argv)
  } catch (err) {
    if (err instanceof HelpRequested) {
      console.log(USAGE)
      process.exitCode = 0
      return
    }
    console.error(`qwen-sim: ${(err as Error).message}\n\n${USAGE}`)
    process.exitCode = 2
    return
  }
  const sim = await startSimulator(options)
  const stop = (signal: string) => {
    console.error(`qwen-sim: ${signal}, closing`)
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  // Listen before printing the URL: whoever reads it may signal at once.
  process.once('SIGINT', () => stop('SIGINT'))
  process.once('SIGTERM', () => stop('SIGTERM'))
  console.log(sim.url)
}

/** True when this file is the program Node was started with (through any symlink), not an import. */
function isProgram(): boolean {
  const entry = process.argv[1]
  if (!entry) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isProgram()) {
  main().catch((err: unknown) => {
    console.error(`qwen-sim: ${(err as Error).message}`)
    process.exitCode = 1
  })
}
