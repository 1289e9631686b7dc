#!/usr/bin/env node
/**
 * The `qwen-guard` command (`pnpm qwen-guard ...` in this repository). One subcommand:
 * `qwen-guard report --redis URL [--last 24h | --from T --to T] [--json]` reads the usage report
 * (docs/usage-report.md) that every guard on that Redis recorded and prints it as a table, or as
 * JSON. Exit codes: 0 done, 2 bad flags (the reason and the usage on stderr), 1 Redis could not be
 * read. Redis passwords are never printed.
 *
 * The installed bin is `bin/qwen-guard.js`, a committed shim that calls `main()` of the built file
 * (a fresh `pnpm install` can link it before anything is built). Run directly (`node dist/cli.js`,
 * `tsx src/cli.ts`), this file starts itself.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs as parseFlags } from 'node:util'
import { createGuardStore } from './store.js'
import { readUsageReport, parseDuration, type UsagePeriod } from './usage/index.js'
import { MAX_DATE_MS } from './usage/period.js'
import { formatReport } from './usage/table.js'

export const USAGE = `usage: qwen-guard report --redis URL [flags]    (in the qwen-guard repository: pnpm qwen-guard report ...)

Prints the usage report every guard on this Redis recorded: per account x model, peak requests and
tokens per minute and per second against the limits, minutes at the limit, queue waits, upstream
refusals, fallbacks and tokens per day. For a quota-increase request to Alibaba Cloud.

  --redis URL        redis:// or rediss:// URL of the guards' Redis (required)
  --prefix P         the guards' store.prefix (default qg)
  --last DURATION    the period up to now, e.g. 90m, 24h, 7d (default 24h)
  --from TIME        start: ISO 8601 (2026-05-01T00:00Z) or epoch ms (instead of --last)
  --to TIME          end (default now)
  --at-limit RATIO   a minute is at the limit when a figure reached RATIO of its limit (default 0.9)
  --json             print the report as JSON (the value of guard.usageReport())
  -h, --help         print this help and exit`

const FLAGS = {
  redis: { type: 'string' },
  prefix: { type: 'string' },
  last: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  'at-limit': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

/** What `report` was asked for. */
export interface ReportCommand {
  redis: string
  prefix: string
  period: UsagePeriod
  json: boolean
}

/** Thrown by parseArgs for `--help` / `-h`: not an error, the caller prints USAGE and exits 0. */
export class HelpRequested extends Error {
  constructor() {
    super('help requested')
    this.name = 'HelpRequested'
  }
}

/**
 * Flags -> the report command. Throws an Error naming the flag for an unknown subcommand or flag,
 * a missing or malformed value; `HelpRequested` for `--help`. A leading `--` is ignored.
 */
export function parseArgs(argv: string[], now = Date.now()): ReportCommand {
  const args = argv[0] === '--' ? argv.slice(1) : argv
  if (args.includes('-h') || args.includes('--help')) throw new HelpRequested()
  const [command, ...rest] = args
  if (command !== 'report') throw new Error(command ? `unknown command ${command}` : 'missing command: report')
  let values: { [K in keyof typeof FLAGS]?: (typeof FLAGS)[K]['type'] extends 'boolean' ? boolean : string }
  try {
    values = parseFlags({ args: rest, options: FLAGS, strict: true, allowPositionals: false }).values
  } catch (err) {
    const { code, message } = err as { code?: string; message: string }
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
      throw new Error(`unknown flag ${/'([^']+)'/.exec(message)?.[1] ?? message}`)
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
      throw new Error(`unexpected argument ${/'([^']+)'/.exec(message)?.[1] ?? message}`)
    throw new Error(message)
  }
  if (!values.redis) throw new Error('--redis URL is required')
  if (!/^rediss?:\/\//.test(values.redis)) throw new Error('--redis must be a redis:// or rediss:// URL')
  if (values.last !== undefined && values.from !== undefined) throw new Error('--last and --from exclude each other')
  const to = values.to === undefined ? now : time('--to', values.to)
  const from = values.from !== undefined ? time('--from', values.from) : since(to, values.last ?? '24h')
  const period: UsagePeriod = { from, to }
  if (values['at-limit'] !== undefined) {
    const ratio = Number(values['at-limit'])
    if (!(ratio > 0 && ratio <= 1)) throw new Error(`--at-limit must be a number in (0, 1], got ${values['at-limit']}`)
    period.atLimitRatio = ratio
  }
  if (!(from < to)) throw new Error('the period is empty: --from must be before --to')
  // A prefix no guard can have (store.prefix: non-empty, no braces) would read an empty report.
  const prefix = values.prefix ?? 'qg'
  if (prefix.trim() === '' || /[{}]/.test(prefix))
    throw new Error(
      `--prefix must be a guard's store.prefix (non-empty, without { or }), got ${JSON.stringify(prefix)}`,
    )
  return { redis: values.redis, prefix, period, json: values.json === true }
}

function time(flag: string, text: string): number {
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text)
  // Past a Date's range (8.64e15 ms) the report could not name its period: "Invalid time value", exit 1.
  if (!(Math.abs(ms) <= MAX_DATE_MS)) throw new Error(`${flag}: not a time: ${text} (ISO 8601 or epoch ms)`)
  return ms
}

/** The start of `--last` before `to`, which must be a time too. */
function since(to: number, last: string): number {
  const from = to - durationOf('--last', last)
  if (!(from >= -MAX_DATE_MS)) throw new Error(`--last: too long: ${JSON.stringify(last)} reaches before any time`)
  return from
}

function durationOf(flag: string, text: string): number {
  try {
    return parseDuration(text)
  } catch (err) {
    throw new Error(`${flag}: ${(err as Error).message}`)
  }
}

/** The URL with any password replaced by ***. */
export function maskUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return 'the given URL'
  }
}

/** Reads the report from Redis. Rejects with an Error whose message names the masked URL. */
export async function runReport(command: ReportCommand) {
  const { Redis } = await import('ioredis').catch(() => {
    throw new Error('the ioredis package is needed to read Redis: npm install ioredis')
  })
  const where = maskUrl(command.redis)
  const redis = new Redis(command.redis, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy: () => null,
  })
  let lastError: Error | undefined
  redis.on('error', (err: Error) => (lastError = err)) // reported by connect() / the commands
  try {
    await redis.connect().catch((err: unknown) => {
      throw new Error(`cannot reach Redis at ${where} (${(lastError ?? (err as Error)).message})`)
    })
    const store = createGuardStore(
      { prefix: command.prefix, onError: 'closed', commandTimeoutMs: 5_000, redis },
      () => undefined,
    )
    return await readUsageReport(store, command.period).catch((err: unknown) => {
      throw new Error(`cannot read the usage report from Redis at ${where} (${(err as Error).message})`)
    })
  } finally {
    redis.disconnect()
  }
}

/** Runs the command with `argv`; sets `process.exitCode` (0, 1 or 2). */
export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  let command: ReportCommand
  try {
    command = parseArgs(argv)
  } catch (err) {
    if (err instanceof HelpRequested) {
      console.log(USAGE)
      process.exitCode = 0
      return
    }
    console.error(`qwen-guard: ${(err as Error).message}\n\n${USAGE}`)
    process.exitCode = 2
    return
  }
  try {
    const report = await runReport(command)
    console.log(command.json ? JSON.stringify(report, null, 2) : formatReport(report))
    process.exitCode = 0
  } catch (err) {
    console.error(`qwen-guard: ${(err as Error).message}`)
    process.exitCode = 1
  }
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

if (isProgram()) void main()
