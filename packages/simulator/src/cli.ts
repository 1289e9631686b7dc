#!/usr/bin/env node
/**
 * `pnpm sim -- [flags]`: runs the simulator until SIGINT/SIGTERM. Prints the base URL on stdout.
 *
 *   --port N                 TCP port (default 8787; 0 = any free port)
 *   --host ADDR              bind address (default 127.0.0.1)
 *   --time-scale X           simulated ms per real ms (default 1)
 *   --ttft MS                time to first token, simulated ms (default 0)
 *   --per-token MS           time per output token, simulated ms (default 0)
 *   --default-max-tokens N   completion length when a request sets no max_tokens (default 64)
 *   --limit MODEL:RPM:TPM[:RPS:TPS]   override a model's limits (repeatable; empty fields keep the default)
 *   --key KEY[:ACCOUNT]      add an API key, of ACCOUNT (default: an account named after the key); repeatable.
 *                            Without --key: account `default`, key `sk-sim`.
 *   --free-tokens ACCOUNT:N  free allowance per model of an account
 *   --state ACCOUNT:STATE    arrears | free_tier_only
 *   --no-burst               turn burst protection off
 *   --burst FLOOR:FACTOR     burst rule parameters
 *   --fault SPEC             kind[,key=value...], e.g. stream-error,probability=0.1,model=qwen-plus (repeatable)
 *   --seed N                 seed of fault probabilities
 */
import { startSimulator } from './index.js'
import type { AccountOptions, AccountState, FaultSpec, ModelLimits, SimulatorOptions } from './types.js'

export function parseArgs(argv: string[]): SimulatorOptions {
  const options: SimulatorOptions = { port: 8787 }
  const accounts = new Map<string, AccountOptions>()
  const account = (id: string) => {
    let a = accounts.get(id)
    if (!a) accounts.set(id, (a = { id, keys: [] }))
    return a
  }
  const args = argv.filter((a) => a !== '--')
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!
    const value = () => {
      const v = args[++i]
      if (v === undefined) throw new Error(`${flag} needs a value`)
      return v
    }
    switch (flag) {
      case '--port': options.port = num(flag, value()); break
      case '--host': options.host = value(); break
      case '--time-scale': options.timeScale = num(flag, value()); break
      case '--ttft': options.ttftMs = num(flag, value()); break
      case '--per-token': options.perTokenMs = num(flag, value()); break
      case '--default-max-tokens': options.defaultMaxTokens = num(flag, value()); break
      case '--seed': options.seed = num(flag, value()); break
      case '--no-burst': options.burst = false; break
      case '--burst': {
        const [floor, factor] = value().split(':')
        options.burst = { floor: optNum(flag, floor), factor: optNum(flag, factor) }
        break
      }
      case '--limit': {
        const [model, rpm, tpm, rps, tps] = value().split(':')
        if (!model) throw new Error('--limit needs MODEL:RPM:TPM[:RPS:TPS]')
        const limits: ModelLimits = { rpm: optNum(flag, rpm), tpm: optNum(flag, tpm), rps: optNum(flag, rps), tps: optNum(flag, tps) }
        options.limits = { ...options.limits, [model]: stripUndefined(limits) }
        break
      }
      case '--key': {
        const [key, id] = value().split(':')
        if (!key) throw new Error('--key needs KEY[:ACCOUNT]')
        account(id || key).keys.push(key)
        break
      }
      case '--free-tokens': {
        const [id, n] = value().split(':')
        account(id ?? '').freeTokens = num(flag, n ?? '')
        break
      }
      case '--state': {
        const [id, state] = value().split(':')
        if (state !== 'arrears' && state !== 'free_tier_only' && state !== 'ok') throw new Error('--state ACCOUNT:arrears|free_tier_only')
        account(id ?? '').state = state as AccountState
        break
      }
      case '--fault': options.faults = [...(options.faults ?? []), parseFault(value())]; break
      case '--help':
      case '-h':
        throw new Error('help')
      default:
        throw new Error(`unknown flag ${flag}`)
    }
  }
  if (accounts.size > 0) {
    const list = [...accounts.values()]
    // --free-tokens / --state without --key configure the default account.
    const def = list.find((a) => a.id === 'default')
    if (def && def.keys.length === 0) def.keys.push('sk-sim')
    options.accounts = list
  }
  return options
}

/** `kind,key=value,...`: account, model, probability, times, afterChunks, delayMs, status, code, message. */
export function parseFault(text: string): FaultSpec {
  const [kind, ...pairs] = text.split(',')
  const spec: Record<string, unknown> = { kind }
  for (const pair of pairs) {
    const eq = pair.indexOf('=')
    if (eq < 0) throw new Error(`--fault ${text}: expected key=value, got ${pair}`)
    const key = pair.slice(0, eq)
    const raw = pair.slice(eq + 1)
    spec[key] = ['probability', 'times', 'afterChunks', 'delayMs', 'status'].includes(key) ? num(`--fault ${key}`, raw) : raw
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

async function main(): Promise<void> {
  let options: SimulatorOptions
  try {
    options = parseArgs(process.argv.slice(2))
  } catch (err) {
    const help = (err as Error).message === 'help'
    if (!help) console.error(`qwen-guard simulator: ${(err as Error).message}`)
    console.error('usage: pnpm sim -- [--port N] [--time-scale X] [--ttft MS] [--per-token MS] [--limit MODEL:RPM:TPM[:RPS:TPS]]')
    console.error('       [--key KEY[:ACCOUNT]] [--free-tokens ACCOUNT:N] [--state ACCOUNT:STATE] [--no-burst | --burst FLOOR:FACTOR]')
    console.error('       [--fault kind[,account=..,model=..,probability=..,times=..]] [--seed N]   (see packages/simulator/README.md)')
    process.exit(help ? 0 : 2)
  }
  const sim = await startSimulator(options)
  console.log(sim.url)
  const stop = (signal: string) => {
    console.error(`qwen-guard simulator: ${signal}, closing`)
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.once('SIGINT', () => stop('SIGINT'))
  process.once('SIGTERM', () => stop('SIGTERM'))
}

// Run only as a program, not when a test imports parseArgs.
const entry = process.argv[1] ?? ''
if (/cli\.(ts|js|cjs|mjs)$/.test(entry)) void main()
