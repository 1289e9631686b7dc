import { builtinLimits, NEW_MODEL_DEFAULTS } from './models.js'
import type { AccountOptions, AccountState, FaultSpec, ModelLimits, ResolvedLimits, SimulatorOptions } from './types.js'

export interface ResolvedAccount {
  id: string
  keys: string[]
  freeTokens: number
  state: AccountState
  /** Effective limits per model for this account (every known model). */
  limits: Map<string, ResolvedLimits>
}

export interface ResolvedBurst {
  /** Explicit floor, or undefined for max(2, ceil(rps / 2)) per account x model. */
  floor: number | undefined
  factor: number
}

export interface ResolvedOptions {
  port: number
  host: string
  accounts: ResolvedAccount[]
  /** API key -> account. */
  keys: Map<string, ResolvedAccount>
  /** Model ids in table order, for GET /models and the 404 check. */
  models: string[]
  burst: ResolvedBurst | false
  timeScale: number
  ttftMs: number
  perTokenMs: number
  defaultMaxTokens: number
  maxBodyBytes: number
  faults: FaultSpec[]
  seed: number
}

const DEFAULT_ACCOUNT: AccountOptions = { id: 'default', keys: ['sk-sim'] }

export function resolveOptions(options: SimulatorOptions = {}): ResolvedOptions {
  const global = mergeTable(builtinLimits(), options.limits ?? {})
  const accounts = (options.accounts ?? [DEFAULT_ACCOUNT]).map((a) => resolveAccount(a, global))
  const keys = new Map<string, ResolvedAccount>()
  for (const account of accounts) {
    for (const key of account.keys) {
      if (keys.has(key)) throw new Error(`accounts: key ${key.slice(0, 6)}... is listed twice`)
      keys.set(key, account)
    }
  }
  return {
    port: options.port ?? 0,
    host: options.host ?? '127.0.0.1',
    accounts,
    keys,
    models: [...new Set([...Object.keys(global), ...accounts.flatMap((a) => [...a.limits.keys()])])],
    burst: resolveBurst(options.burst),
    timeScale: positive('timeScale', options.timeScale ?? 1),
    ttftMs: nonNegative('ttftMs', options.ttftMs ?? 0),
    perTokenMs: nonNegative('perTokenMs', options.perTokenMs ?? 0),
    defaultMaxTokens: positive('defaultMaxTokens', options.defaultMaxTokens ?? 64),
    maxBodyBytes: positive('maxBodyBytes', options.maxBodyBytes ?? 6 * 1024 * 1024),
    faults: options.faults ?? [],
    seed: options.seed ?? 1,
  }
}

function resolveAccount(account: AccountOptions, global: Record<string, ResolvedLimits>): ResolvedAccount {
  if (!account.id) throw new Error('accounts[].id is required')
  if (!account.keys?.length) throw new Error(`accounts[${account.id}].keys needs at least one key`)
  const table = mergeTable(global, account.models ?? {})
  return {
    id: account.id,
    keys: [...account.keys],
    freeTokens: account.freeTokens ?? Infinity,
    state: account.state ?? 'ok',
    limits: new Map(Object.entries(table)),
  }
}

/** Overrides on top of a table; rps/tps follow an overridden rpm/tpm unless set themselves. */
function mergeTable(base: Record<string, ResolvedLimits>, overrides: Record<string, ModelLimits>) {
  const out: Record<string, ResolvedLimits> = { ...base }
  for (const [model, o] of Object.entries(overrides)) {
    const b = base[model]
    const rpm = positive(`${model}.rpm`, o.rpm ?? b?.rpm ?? NEW_MODEL_DEFAULTS.rpm)
    const tpm = positive(`${model}.tpm`, o.tpm ?? b?.tpm ?? NEW_MODEL_DEFAULTS.tpm)
    out[model] = {
      rpm,
      tpm,
      rps: positive(`${model}.rps`, o.rps ?? (o.rpm === undefined && b ? b.rps : derivedRps(rpm))),
      tps: positive(`${model}.tps`, o.tps ?? (o.tpm === undefined && b ? b.tps : tpm / 60)),
      maxTokens: positive(`${model}.maxTokens`, o.maxTokens ?? b?.maxTokens ?? NEW_MODEL_DEFAULTS.maxTokens),
    }
  }
  return out
}

/** RPM / 60, but at least 1: a derived per-second limit under 1 would refuse every call. */
function derivedRps(rpm: number): number {
  return Math.max(1, rpm / 60)
}

function resolveBurst(burst: SimulatorOptions['burst']): ResolvedBurst | false {
  if (burst === false) return false
  return {
    floor: burst?.floor === undefined ? undefined : positive('burst.floor', burst.floor),
    factor: positive('burst.factor', burst?.factor ?? 2),
  }
}

function positive(name: string, value: number): number {
  if (!(value > 0)) throw new Error(`${name} must be a number > 0 (got ${value})`)
  return value
}

function nonNegative(name: string, value: number): number {
  if (!(value >= 0)) throw new Error(`${name} must be a number >= 0 (got ${value})`)
  return value
}
