/**
 * resolveOptions: validates GuardOptions and fills every default (the JSDoc of types.ts). A bad
 * configuration fails at start-up with a QwenGuardConfigError naming the option path; no message
 * ever contains an API key.
 */
import { withinDeadline } from './app-hook.js'
import { createEstimator } from './estimate.js'
import {
  BUILTIN_MODELS,
  DEFAULT_CONTEXT_WINDOW,
  DEFAULT_MAX_OUTPUT_TOKENS,
  DEFAULT_MAX_REASONING_TOKENS,
  DEFAULT_THINKING,
} from './models.js'
import { upstreamPost } from './transport.js'
import type {
  GuardOptions,
  Identity,
  MetricsRegistry,
  ModelPrice,
  ModelSpec,
  QuotaPolicies,
  QuotaMode,
  QuotaPolicy,
  ResolvedAccount,
  ResolvedModel,
  ResolvedOptions,
  TokenEstimator,
} from './types.js'

/** A configuration mistake. `path` is the option at fault, e.g. `quotas.user.rpm`. */
export class QwenGuardConfigError extends Error {
  readonly path: string
  constructor(path: string, reason: string) {
    super(`${path}: ${reason}`)
    this.name = 'QwenGuardConfigError'
    this.path = path
  }
}

export const DEFAULT_BASE_URL = 'https://dashscope-intl.aliyuncs.com/compatible-mode/v1'

/** Defaults of every scalar option (types.ts documents them). */
export const DEFAULTS = Object.freeze({
  safetyMargin: 0.97,
  timeoutMs: 120_000,
  maxAttempts: 4,
  disableMs: 3_600_000,
  maxRetryAfterMs: 60_000,
  rampUp: Object.freeze({ initialRps: 2, factor: 1.5 }),
  storePrefix: 'qg',
  storeOnError: 'open' as const,
  queueMaxWaitMs: 10_000,
  queueMaxSize: 1_000,
  storeCommandTimeoutMs: 500,
  storeLeaseTtlMs: 30_000,
  queueWaitForConcurrency: true,
  defaultMaxTokens: 1_024,
  defaultThinkingBudget: 4_096,
  searchAllowanceTokens: 8_192,
  usageRetentionMs: 604_800_000,
})

const TOP_KEYS = [
  'upstream',
  'models',
  'quotas',
  'store',
  'queue',
  'defaultMaxTokens',
  'defaultThinkingBudget',
  'searchAllowanceTokens',
  'estimator',
  'allowedModels',
  'metrics',
  'headers',
  'usage',
]
const UPSTREAM_KEYS = [
  'baseURL',
  'accounts',
  'apiKey',
  'safetyMargin',
  'timeoutMs',
  'maxAttempts',
  'disableMs',
  'maxRetryAfterMs',
  'streamIdleMs',
  'rampUp',
  'fetch',
]
const ACCOUNT_KEYS = ['id', 'apiKey', 'apiKeys', 'models']
const MODEL_KEYS = [
  'rpm',
  'tpm',
  'rps',
  'tps',
  'contextWindow',
  'maxOutputTokens',
  'thinking',
  'maxReasoningTokens',
  'fallback',
  'price',
]
const THINKING_MODES: ReadonlyArray<NonNullable<ModelSpec['thinking']>> = ['off', 'on', 'always', 'unsupported']
const POLICY_KEYS = ['rpm', 'rps', 'tpm', 'tps', 'concurrency', 'tokensPerDay', 'usdPerDay', 'mode']
const QUOTA_MODES = ['enforce', 'shadow'] as const
const STORE_KEYS = ['redis', 'prefix', 'onError', 'commandTimeoutMs', 'leaseTtlMs']
const QUEUE_KEYS = ['maxWaitMs', 'maxSize', 'waitForConcurrency']

// ---------- small checkers: each throws with the path, returns the checked value ----------

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined)
    return String(value)
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`
}

function isNonArrayObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * A plain object (`{ ... }`, or one made by `Object.create(null)`; from any realm). A Map, a class
 * instance or an object whose fields are inherited would have its fields read by some checks and
 * not by others (keys are own keys): refused, so no limit is dropped in silence.
 */
function object(value: unknown, path: string): Record<string, unknown> {
  if (!isNonArrayObject(value)) throw new QwenGuardConfigError(path, `must be an object, got ${describe(value)}`)
  const proto = Object.getPrototypeOf(value) as object | null
  if (proto !== null && Object.getPrototypeOf(proto) !== null) {
    const kind = (value as { constructor?: { name?: unknown } }).constructor?.name
    throw new QwenGuardConfigError(
      path,
      `must be a plain object ({ ... }), got ${typeof kind === 'string' && kind !== '' && kind !== 'Object' ? `a ${kind}` : 'an object with an inherited prototype'}`,
    )
  }
  return value
}

/** Typo protection: `upstream.acounts` fails instead of silently meaning "no accounts". */
function knownKeys(value: Record<string, unknown>, allowed: readonly string[], path: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      const where = path ? `${path}.${key}` : key
      throw new QwenGuardConfigError(where, `unknown option (expected one of: ${allowed.join(', ')})`)
    }
  }
}

function positive(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new QwenGuardConfigError(path, `must be a positive number, got ${describe(value)}`)
  }
  return value
}

function positiveInt(value: unknown, path: string): number {
  const n = positive(value, path)
  if (!Number.isInteger(n)) throw new QwenGuardConfigError(path, `must be an integer, got ${n}`)
  return n
}

/**
 * The longest delay Node's timers take (2^31 - 1 ms, about 24.8 days): a longer one fires after 1 ms
 * (TimeoutOverflowWarning), so a `timeoutMs` of 3e9 meant "every call times out at once".
 */
export const MAX_TIMER_MS = 2_147_483_647

/** A duration the guard sets a timer for: checked by `check`, then at most MAX_TIMER_MS. */
function timerMs(value: unknown, path: string, check: (value: unknown, path: string) => number): number {
  const ms = check(value, path)
  if (ms > MAX_TIMER_MS)
    throw new QwenGuardConfigError(
      path,
      `must be at most ${MAX_TIMER_MS} ms (about 24.8 days, the longest timer Node sets), got ${ms}`,
    )
  return ms
}

function nonNegativeInt(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new QwenGuardConfigError(path, `must be a non-negative integer, got ${describe(value)}`)
  }
  return value
}

function nonNegative(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new QwenGuardConfigError(path, `must be a non-negative number, got ${describe(value)}`)
  }
  return value
}

/**
 * The largest limit: 999,999,999,999,999, the largest integer an RFC 8941 structured header field
 * carries (15 digits; the RateLimit fields print limits), far above any real limit, and exact as a
 * JavaScript number. A larger one (1e21) would print as `1e+21`, which no client parses.
 */
const MAX_LIMIT = 999_999_999_999_999
/** The largest `usdPerDay`: counted in micro-dollars, so its points stay within MAX_LIMIT. */
const MAX_USD_PER_DAY = 999_999_999

/** A limit: `value` passed by `check`, at most `max` (like `timerMs` for durations). */
function limit(value: unknown, path: string, check: (value: unknown, path: string) => number, max = MAX_LIMIT): number {
  const n = check(value, path)
  if (n > max) throw new QwenGuardConfigError(path, `must be at most ${max.toLocaleString('en-US')}, got ${n}`)
  return n
}

function nonEmptyString(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new QwenGuardConfigError(path, `must be a non-empty string, got ${describe(value)}`)
  }
  return value
}

// ---------- upstream: base URL and accounts ----------

function resolveBaseURL(value: unknown): string {
  if (value === undefined) return DEFAULT_BASE_URL
  const text = nonEmptyString(value, 'upstream.baseURL')
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new QwenGuardConfigError('upstream.baseURL', `must be an absolute http(s) URL, got ${describe(text)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new QwenGuardConfigError('upstream.baseURL', `must use http or https, got ${describe(url.protocol)}`)
  }
  if (url.search || url.hash) throw new QwenGuardConfigError('upstream.baseURL', 'must not contain a query or fragment')
  // Paths are appended to it ("/chat/completions"), so no trailing slash.
  return text.replace(/\/+$/, '')
}

/**
 * A key is checked without ever printing it: messages say which index, not what. It travels as
 * `Authorization: Bearer <key>`, so it is visible ASCII (RFC 6750's b64token is narrower still): a
 * key with a line break, a NUL or a letter beyond ASCII (pasted with a stray newline, a non-breaking
 * space, a look-alike letter) could never be sent, and every call would fail as a network error.
 */
function apiKey(value: unknown, path: string): string {
  if (typeof value !== 'string') throw new QwenGuardConfigError(path, `must be a string, got ${typeof value}`)
  if (value.trim() === '') throw new QwenGuardConfigError(path, 'must not be empty')
  if (value !== value.trim()) throw new QwenGuardConfigError(path, 'must not start or end with whitespace')
  const bad = /[^\x21-\x7e]/.exec(value)
  if (bad) {
    const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')
    throw new QwenGuardConfigError(
      path,
      `must be visible ASCII (it is sent in the Authorization header): character ${bad.index + 1} is U+${code}`,
    )
  }
  return value
}

function accountKeys(account: Record<string, unknown>, path: string): string[] {
  if (account.apiKey !== undefined && account.apiKeys !== undefined) {
    throw new QwenGuardConfigError(path, 'give either apiKey or apiKeys, not both')
  }
  if (account.apiKey !== undefined) return [apiKey(account.apiKey, `${path}.apiKey`)]
  if (account.apiKeys === undefined)
    throw new QwenGuardConfigError(`${path}.apiKeys`, 'at least one API key is required')
  if (!Array.isArray(account.apiKeys)) {
    throw new QwenGuardConfigError(`${path}.apiKeys`, `must be an array of strings, got ${describe(account.apiKeys)}`)
  }
  if (account.apiKeys.length === 0)
    throw new QwenGuardConfigError(`${path}.apiKeys`, 'at least one API key is required')
  return account.apiKeys.map((key, i) => apiKey(key, `${path}.apiKeys[${i}]`))
}

interface RawAccount {
  id: string
  apiKeys: string[]
  models: Record<string, unknown> | undefined
  path: string
}

function rawAccounts(upstream: Record<string, unknown>): RawAccount[] {
  const { apiKey: shorthand, accounts } = upstream
  if (shorthand !== undefined && accounts !== undefined) {
    throw new QwenGuardConfigError('upstream', 'give either apiKey or accounts, not both')
  }
  if (shorthand !== undefined) {
    return [{ id: 'default', apiKeys: [apiKey(shorthand, 'upstream.apiKey')], models: undefined, path: 'upstream' }]
  }
  if (accounts === undefined)
    throw new QwenGuardConfigError(
      'upstream.apiKey',
      // `apiKey: process.env.DASHSCOPE_API_KEY` with the variable unset lands here as undefined.
      'an API key is required (upstream.apiKey or upstream.accounts); got none: is the environment variable it is read from (DASHSCOPE_API_KEY) set?',
    )
  if (!Array.isArray(accounts) || accounts.length === 0) {
    throw new QwenGuardConfigError('upstream.accounts', 'must be a non-empty array of accounts')
  }
  const ids = new Set<string>()
  const keyOwner = new Map<string, string>()
  return accounts.map((entry, i) => {
    const path = `upstream.accounts[${i}]`
    const account = object(entry, path)
    knownKeys(account, ACCOUNT_KEYS, path)
    const id = nonEmptyString(account.id, `${path}.id`)
    if (ids.has(id)) throw new QwenGuardConfigError(`${path}.id`, `duplicate account id ${describe(id)}`)
    ids.add(id)
    const keys = accountKeys(account, path)
    keys.forEach((key, k) => {
      // The same key twice would make one account's quota look like two accounts' worth.
      const owner = keyOwner.get(key)
      if (owner !== undefined)
        throw new QwenGuardConfigError(
          `${path}.apiKeys[${k}]`,
          `this key is already listed for account ${describe(owner)}`,
        )
      keyOwner.set(key, id)
    })
    const models = account.models === undefined ? undefined : object(account.models, `${path}.models`)
    return { id, apiKeys: keys, models, path }
  })
}

// ---------- models ----------

type PartialSpec = Partial<ModelSpec>

function checkPrice(value: unknown, path: string): ModelSpec['price'] {
  const price = object(value, path)
  knownKeys(price, ['inputPerMillion', 'outputPerMillion', 'tiers'], path)
  const checked: ModelPrice = {
    inputPerMillion: nonNegative(price.inputPerMillion, `${path}.inputPerMillion`),
    outputPerMillion: nonNegative(price.outputPerMillion, `${path}.outputPerMillion`),
  }
  if (price.tiers === undefined) return checked
  if (!Array.isArray(price.tiers))
    throw new QwenGuardConfigError(`${path}.tiers`, `must be an array, got ${describe(price.tiers)}`)
  let previous = 0
  checked.tiers = price.tiers.map((value, i) => {
    const at = `${path}.tiers[${i}]`
    const tier = object(value, at)
    knownKeys(tier, ['inputAbove', 'inputPerMillion', 'outputPerMillion'], at)
    const inputAbove = positiveInt(tier.inputAbove, `${at}.inputAbove`)
    if (inputAbove <= previous) {
      throw new QwenGuardConfigError(
        `${at}.inputAbove`,
        `must be above the tier before it (${previous}), got ${inputAbove}`,
      )
    }
    previous = inputAbove
    return {
      inputAbove,
      inputPerMillion: nonNegative(tier.inputPerMillion, `${at}.inputPerMillion`),
      outputPerMillion: nonNegative(tier.outputPerMillion, `${at}.outputPerMillion`),
    }
  })
  return checked
}

/** Shape-checks one partial spec (names are checked later, once the table is complete). */
function checkPartialSpec(value: unknown, path: string): PartialSpec {
  const spec = object(value, path)
  knownKeys(spec, MODEL_KEYS, path)
  const out: PartialSpec = {}
  for (const key of ['rpm', 'tpm', 'contextWindow', 'maxOutputTokens', 'maxReasoningTokens'] as const) {
    if (spec[key] !== undefined) out[key] = limit(spec[key], `${path}.${key}`, positiveInt)
  }
  if (spec.thinking !== undefined) {
    if (!THINKING_MODES.includes(spec.thinking as never)) {
      throw new QwenGuardConfigError(
        `${path}.thinking`,
        `must be one of ${THINKING_MODES.join(', ')}, got ${describe(spec.thinking)}`,
      )
    }
    out.thinking = spec.thinking as NonNullable<ModelSpec['thinking']>
  }
  // Per-second limits are fractional by nature (100,000 TPM / 60).
  for (const key of ['rps', 'tps'] as const) {
    if (spec[key] !== undefined) out[key] = limit(spec[key], `${path}.${key}`, positive)
  }
  if (spec.fallback !== undefined) {
    if (!Array.isArray(spec.fallback))
      throw new QwenGuardConfigError(
        `${path}.fallback`,
        `must be an array of model names, got ${describe(spec.fallback)}`,
      )
    out.fallback = spec.fallback.map((name, i) => nonEmptyString(name, `${path}.fallback[${i}]`))
  }
  if (spec.price !== undefined) out.price = checkPrice(spec.price, `${path}.price`)
  return out
}

/** What a model name may hold: it travels in a response header. */
const MODEL_NAME = /^[\x21-\x7e]+$/

/** Layers partial specs: later layers win field by field. */
function mergeTables(
  base: Record<string, PartialSpec>,
  overrides: Record<string, unknown> | undefined,
  path: string,
  allowNew: boolean,
): Record<string, PartialSpec> {
  // Null prototype: a model named "__proto__" or "constructor" is just a name.
  const out: Record<string, PartialSpec> = Object.assign(Object.create(null) as Record<string, PartialSpec>, base)
  if (!overrides) return out
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) continue
    const where = `${path}.${name}`
    const spec = checkPartialSpec(value, where)
    const existing = Object.hasOwn(out, name) ? out[name] : undefined
    if (!existing) {
      if (!allowNew)
        throw new QwenGuardConfigError(where, `unknown model ${describe(name)} (add it to options.models first)`)
      // Answers name their model in a header (x-qwen-guard-model): it must be a valid header value.
      if (!MODEL_NAME.test(name))
        throw new QwenGuardConfigError(where, `a model name is printable ASCII without spaces, got ${describe(name)}`)
      if (spec.rpm === undefined)
        throw new QwenGuardConfigError(`${where}.rpm`, 'a model not in the built-in table must give rpm')
      if (spec.tpm === undefined)
        throw new QwenGuardConfigError(`${where}.tpm`, 'a model not in the built-in table must give tpm')
    }
    out[name] = { ...existing, ...spec }
  }
  return out
}

function resolveModel(name: string, spec: PartialSpec): ResolvedModel {
  // Both exist: new models must give them, built-ins have them.
  const rpm = spec.rpm as number
  const tpm = spec.tpm as number
  const model: ResolvedModel = {
    name,
    rpm,
    tpm,
    rps: spec.rps ?? rpm / 60,
    tps: spec.tps ?? tpm / 60,
    contextWindow: spec.contextWindow ?? DEFAULT_CONTEXT_WINDOW,
    maxOutputTokens: spec.maxOutputTokens ?? DEFAULT_MAX_OUTPUT_TOKENS,
    thinking: spec.thinking ?? DEFAULT_THINKING,
    maxReasoningTokens: spec.maxReasoningTokens ?? DEFAULT_MAX_REASONING_TOKENS,
    fallback: [...(spec.fallback ?? [])],
  }
  if (spec.price) model.price = { ...spec.price }
  return model
}

function checkFallbacks(table: Record<string, ResolvedModel>, path: string): void {
  for (const model of Object.values(table)) {
    const seen = new Set<string>()
    model.fallback.forEach((target, i) => {
      const where = `${path}.${model.name}.fallback[${i}]`
      if (!Object.hasOwn(table, target)) throw new QwenGuardConfigError(where, `unknown model ${describe(target)}`)
      // A cycle a -> b -> a is fine (each call tries a list once); a model falling back to itself is a mistake.
      if (target === model.name) throw new QwenGuardConfigError(where, 'a model cannot fall back to itself')
      if (seen.has(target)) throw new QwenGuardConfigError(where, `duplicate fallback ${describe(target)}`)
      seen.add(target)
    })
  }
}

function resolveTable(raw: Record<string, PartialSpec>, path: string): Record<string, ResolvedModel> {
  const table = Object.create(null) as Record<string, ResolvedModel>
  for (const [name, spec] of Object.entries(raw)) table[name] = resolveModel(name, spec)
  checkFallbacks(table, path)
  return table
}

// ---------- quotas ----------

function checkPolicy(value: unknown, path: string): QuotaPolicy {
  if (value === undefined) return {}
  const policy = object(value, path)
  knownKeys(policy, POLICY_KEYS, path)
  const out: QuotaPolicy = {}
  // 0 is a real policy ("nothing allowed": a suspended tenant, a tier without spend), refused for good.
  for (const key of ['rpm', 'rps', 'tpm', 'tps', 'concurrency', 'tokensPerDay'] as const) {
    // Counted in whole requests and tokens by rate-limiter-flexible: integers only.
    if (policy[key] !== undefined) out[key] = limit(policy[key], `${path}.${key}`, nonNegativeInt)
  }
  if (policy.usdPerDay !== undefined)
    out.usdPerDay = limit(policy.usdPerDay, `${path}.usdPerDay`, nonNegative, MAX_USD_PER_DAY)
  if (policy.mode !== undefined) {
    if (!QUOTA_MODES.includes(policy.mode as never))
      throw new QwenGuardConfigError(`${path}.mode`, `must be 'enforce' or 'shadow', got ${describe(policy.mode)}`)
    out.mode = policy.mode as QuotaMode
  }
  return out
}

/**
 * Checks quota policies (static ones at start, a function's result at call time) and returns a
 * clean copy. Throws QwenGuardConfigError naming `path`. `undefined`/`null` means no limits.
 */
export function validateQuotaPolicies(policies: unknown, path: string): QuotaPolicies {
  if (policies === undefined || policies === null) return {}
  const obj = object(policies, path)
  knownKeys(obj, ['user', 'key'], path)
  const out: QuotaPolicies = {}
  if (obj.user !== undefined) out.user = checkPolicy(obj.user, `${path}.user`)
  if (obj.key !== undefined) out.key = checkPolicy(obj.key, `${path}.key`)
  return out
}

/**
 * The policies of an identity. A function's answer is checked at each call; a lookup that does not
 * settle within `timeoutMs`, or before the caller's signal aborts, ends the call (app-hook.ts).
 */
function resolveQuotas(value: unknown, timeoutMs: number): ResolvedOptions['quotas'] {
  if (typeof value === 'function') {
    const fn = value as (identity: Identity) => QuotaPolicies | PromiseLike<QuotaPolicies>
    return async (identity, signal) =>
      validateQuotaPolicies(
        await withinDeadline(fn(identity), 'quotas(identity)', timeoutMs, signal),
        'quotas(identity)',
      )
  }
  const policies = Object.freeze(validateQuotaPolicies(value, 'quotas'))
  return async () => policies
}

// ---------- the rest ----------

function resolveUpstreamTuning(upstream: Record<string, unknown>): ResolvedOptions['upstream'] {
  const margin = upstream.safetyMargin ?? DEFAULTS.safetyMargin
  if (typeof margin !== 'number' || !(margin > 0 && margin <= 1)) {
    throw new QwenGuardConfigError('upstream.safetyMargin', `must be a number in (0, 1], got ${describe(margin)}`)
  }
  const fetchOption = upstream.fetch
  if (fetchOption !== undefined && typeof fetchOption !== 'function') {
    throw new QwenGuardConfigError('upstream.fetch', `must be a function, got ${describe(fetchOption)}`)
  }
  const timeoutMs =
    upstream.timeoutMs === undefined
      ? DEFAULTS.timeoutMs
      : timerMs(upstream.timeoutMs, 'upstream.timeoutMs', positiveInt)
  return {
    safetyMargin: margin,
    timeoutMs,
    maxAttempts:
      upstream.maxAttempts === undefined
        ? DEFAULTS.maxAttempts
        : positiveInt(upstream.maxAttempts, 'upstream.maxAttempts'),
    disableMs:
      upstream.disableMs === undefined ? DEFAULTS.disableMs : positiveInt(upstream.disableMs, 'upstream.disableMs'),
    maxRetryAfterMs:
      upstream.maxRetryAfterMs === undefined
        ? DEFAULTS.maxRetryAfterMs
        : timerMs(upstream.maxRetryAfterMs, 'upstream.maxRetryAfterMs', positiveInt),
    streamIdleMs:
      upstream.streamIdleMs === undefined
        ? timeoutMs
        : timerMs(upstream.streamIdleMs, 'upstream.streamIdleMs', positiveInt),
    rampUp: resolveRampUp(upstream.rampUp),
    post: upstreamPost(fetchOption as typeof fetch | undefined),
  }
}

function resolveRampUp(value: unknown): ResolvedOptions['upstream']['rampUp'] {
  if (value === false) return false
  if (value === undefined) return { ...DEFAULTS.rampUp }
  const ramp = object(value, 'upstream.rampUp')
  knownKeys(ramp, ['initialRps', 'factor'], 'upstream.rampUp')
  const factor = ramp.factor === undefined ? DEFAULTS.rampUp.factor : positive(ramp.factor, 'upstream.rampUp.factor')
  if (factor <= 1) throw new QwenGuardConfigError('upstream.rampUp.factor', `must be greater than 1, got ${factor}`)
  return {
    initialRps:
      ramp.initialRps === undefined
        ? DEFAULTS.rampUp.initialRps
        : positive(ramp.initialRps, 'upstream.rampUp.initialRps'),
    factor,
  }
}

function resolveStore(value: unknown): ResolvedOptions['store'] {
  if (value === undefined) {
    return {
      prefix: DEFAULTS.storePrefix,
      onError: DEFAULTS.storeOnError,
      commandTimeoutMs: DEFAULTS.storeCommandTimeoutMs,
      leaseTtlMs: DEFAULTS.storeLeaseTtlMs,
    }
  }
  const store = object(value, 'store')
  knownKeys(store, STORE_KEYS, 'store')
  const onError = store.onError ?? DEFAULTS.storeOnError
  if (onError !== 'open' && onError !== 'closed') {
    throw new QwenGuardConfigError('store.onError', `must be 'open' or 'closed', got ${describe(onError)}`)
  }
  if (store.redis !== undefined && (typeof store.redis !== 'object' || store.redis === null)) {
    throw new QwenGuardConfigError('store.redis', `must be an ioredis client, got ${describe(store.redis)}`)
  }
  // Connection options ({ host, port }) or another client library's object would fail at the first
  // command with a TypeError from deep inside the store: the guard sends `call` and defines its scripts.
  const client = store.redis as { call?: unknown; defineCommand?: unknown } | undefined
  if (client && (typeof client.call !== 'function' || typeof client.defineCommand !== 'function')) {
    throw new QwenGuardConfigError(
      'store.redis',
      'must be an ioredis client (new Redis(url) or new Cluster(nodes)), got an object without call() and defineCommand(): connection options are not accepted',
    )
  }
  // ioredis 5's auto-pipelining crashes the process on rate-limiter-flexible's custom commands
  // (TypeError "results[i] is not iterable" thrown from a callback); measured here, and reported upstream.
  if (
    (store.redis as { options?: { enableAutoPipelining?: unknown } } | undefined)?.options?.enableAutoPipelining ===
    true
  ) {
    throw new QwenGuardConfigError(
      'store.redis',
      "an ioredis client with enableAutoPipelining is not supported (ioredis crashes on the limiters' scripts); give the guard a client without it",
    )
  }
  const out: ResolvedOptions['store'] = {
    prefix: store.prefix === undefined ? DEFAULTS.storePrefix : storePrefix(store.prefix),
    onError,
    commandTimeoutMs:
      store.commandTimeoutMs === undefined
        ? DEFAULTS.storeCommandTimeoutMs
        : timerMs(store.commandTimeoutMs, 'store.commandTimeoutMs', positiveInt),
    leaseTtlMs:
      store.leaseTtlMs === undefined
        ? DEFAULTS.storeLeaseTtlMs
        : timerMs(store.leaseTtlMs, 'store.leaseTtlMs', positiveInt),
  }
  if (store.redis !== undefined) out.redis = store.redis as NonNullable<ResolvedOptions['store']['redis']>
  return out
}

function resolveQueue(value: unknown): ResolvedOptions['queue'] {
  if (value === undefined) {
    return {
      maxWaitMs: DEFAULTS.queueMaxWaitMs,
      maxSize: DEFAULTS.queueMaxSize,
      waitForConcurrency: DEFAULTS.queueWaitForConcurrency,
    }
  }
  const queue = object(value, 'queue')
  knownKeys(queue, QUEUE_KEYS, 'queue')
  const wait = queue.waitForConcurrency ?? DEFAULTS.queueWaitForConcurrency
  if (typeof wait !== 'boolean') {
    throw new QwenGuardConfigError('queue.waitForConcurrency', `must be true or false, got ${describe(wait)}`)
  }
  // 0 is meaningful for both: never wait / never queue (refuse at once when capacity is short).
  return {
    maxWaitMs:
      queue.maxWaitMs === undefined
        ? DEFAULTS.queueMaxWaitMs
        : timerMs(queue.maxWaitMs, 'queue.maxWaitMs', nonNegativeInt),
    maxSize: queue.maxSize === undefined ? DEFAULTS.queueMaxSize : nonNegativeInt(queue.maxSize, 'queue.maxSize'),
    waitForConcurrency: wait,
  }
}

/**
 * `estimator`: any object with `countPromptTokens` (a tokenizer's class instance too, unlike the plain
 * option objects). The count is needed before the call waits for anything, so it is synchronous: an
 * async function is refused here (its promise was dropped, and a rejection of it ended the process).
 */
function resolveEstimator(value: unknown): TokenEstimator {
  if (value === undefined) return createEstimator()
  if (!isNonArrayObject(value)) throw new QwenGuardConfigError('estimator', `must be an object, got ${describe(value)}`)
  const count = value.countPromptTokens
  if (typeof count !== 'function') {
    throw new QwenGuardConfigError('estimator.countPromptTokens', 'must be a function (messages) => number')
  }
  if (count.constructor.name === 'AsyncFunction' || count.constructor.name === 'AsyncGeneratorFunction') {
    throw new QwenGuardConfigError(
      'estimator.countPromptTokens',
      'must return a number synchronously (the reservation is made before the call waits), got an async function',
    )
  }
  return value as unknown as TokenEstimator
}

function resolveAllowed(value: unknown, table: Record<string, ResolvedModel>): Set<string> {
  if (value === undefined) return new Set(Object.keys(table))
  if (!Array.isArray(value) || value.length === 0) {
    throw new QwenGuardConfigError('allowedModels', 'must be a non-empty array of model names')
  }
  return new Set(
    value.map((name, i) => {
      const model = nonEmptyString(name, `allowedModels[${i}]`)
      if (!Object.hasOwn(table, model))
        throw new QwenGuardConfigError(`allowedModels[${i}]`, `unknown model ${describe(model)}`)
      return model
    }),
  )
}

function resolveAccount(raw: RawAccount, globalRaw: Record<string, PartialSpec>): ResolvedAccount {
  const path = `${raw.path}.models`
  const table = resolveTable(mergeTables(globalRaw, raw.models, path, false), path)
  return { id: raw.id, apiKeys: raw.apiKeys, models: table }
}

/** `searchAllowanceTokens`: tokens reserved for search results, or false to refuse `enable_search`. */
function resolveSearchAllowance(value: unknown): number | false {
  if (value === undefined) return DEFAULTS.searchAllowanceTokens
  if (value === false) return false
  return nonNegativeInt(value, 'searchAllowanceTokens')
}

/**
 * Validates `options` and fills every default. Throws QwenGuardConfigError naming the option.
 * `extraKeys`: top-level keys an adapter adds to the same object (e.g. `identify`), accepted and ignored.
 */
export function resolveOptions(options: GuardOptions, extraKeys: readonly string[] = []): ResolvedOptions {
  const root = object(options, 'options')
  knownKeys(root, [...TOP_KEYS, ...extraKeys], '')
  const upstream = object(root.upstream, 'upstream')
  knownKeys(upstream, UPSTREAM_KEYS, 'upstream')
  const accounts = rawAccounts(upstream)
  const userModels = root.models === undefined ? undefined : object(root.models, 'models')
  const globalRaw = mergeTables(BUILTIN_MODELS as Record<string, PartialSpec>, userModels, 'models', true)
  const models = resolveTable(globalRaw, 'models')
  const defaultMaxTokens =
    root.defaultMaxTokens === undefined
      ? DEFAULTS.defaultMaxTokens
      : positiveInt(root.defaultMaxTokens, 'defaultMaxTokens')
  const defaultThinkingBudget =
    root.defaultThinkingBudget === undefined
      ? DEFAULTS.defaultThinkingBudget
      : positiveInt(root.defaultThinkingBudget, 'defaultThinkingBudget')
  const tuning = resolveUpstreamTuning(upstream)
  return {
    baseURL: resolveBaseURL(upstream.baseURL),
    accounts: accounts.map((raw) => resolveAccount(raw, globalRaw)),
    models,
    quotas: resolveQuotas(root.quotas, tuning.timeoutMs),
    store: resolveStore(root.store),
    queue: resolveQueue(root.queue),
    upstream: tuning,
    defaultMaxTokens,
    defaultThinkingBudget,
    searchAllowanceTokens: resolveSearchAllowance(root.searchAllowanceTokens),
    estimator: resolveEstimator(root.estimator),
    allowedModels: resolveAllowed(root.allowedModels, models),
    metrics: resolveMetrics(root.metrics),
    headers: resolveHeaders(root.headers),
    ...resolveUsage(root.usage),
  }
}

/** `headers`: optional answer headers, each off unless set to true. */
function resolveHeaders(value: unknown): ResolvedOptions['headers'] {
  if (value === undefined) return { decision: false }
  const raw = object(value, 'headers')
  knownKeys(raw, ['decision'], 'headers')
  if (raw.decision !== undefined && typeof raw.decision !== 'boolean')
    throw new QwenGuardConfigError('headers.decision', `must be a boolean, got ${describe(raw.decision)}`)
  return { decision: raw.decision === true }
}

const USAGE_KEYS = ['retentionMs', 'now']
/** Most `usage.retentionMs`: 400 days. */
const MAX_USAGE_RETENTION_MS = 400 * 86_400_000

/** `usage`: on unless `false` (docs/usage-report.md); absent from the result when off. */
function resolveUsage(value: unknown): { usage?: NonNullable<ResolvedOptions['usage']> } {
  if (value === false) return {}
  const raw = value === undefined || value === true ? {} : object(value, 'usage')
  knownKeys(raw, USAGE_KEYS, 'usage')
  let retentionMs: number = DEFAULTS.usageRetentionMs
  if (raw.retentionMs !== undefined) {
    retentionMs = positiveInt(raw.retentionMs, 'usage.retentionMs')
    if (retentionMs < 60_000 || retentionMs > MAX_USAGE_RETENTION_MS)
      throw new QwenGuardConfigError(
        'usage.retentionMs',
        `must be from 60,000 (a minute) to ${MAX_USAGE_RETENTION_MS.toLocaleString('en-US')} (400 days), got ${retentionMs.toLocaleString('en-US')}`,
      )
  }
  if (raw.now !== undefined && typeof raw.now !== 'function')
    throw new QwenGuardConfigError('usage.now', `must be a function returning epoch ms, got ${describe(raw.now)}`)
  const appNow = raw.now as (() => unknown) | undefined
  // Each reading is checked: a NaN or a promise would be written as a record's minute, and the
  // report of the period would fail later with a RangeError far from its cause.
  const now = appNow
    ? (): number => {
        const at = appNow()
        if (typeof at !== 'number' || !Number.isFinite(at))
          throw new TypeError(`usage.now() must return epoch ms (a finite number), got ${describe(at)}`)
        return at
      }
    : Date.now
  return { usage: { retentionMs, now } }
}

/**
 * `store.prefix`: a non-empty string without `{` or `}`: every key the guard writes on a Redis Cluster
 * keeps its parts in one slot by a hash tag of its own (`{user:u1}`), which a brace in the prefix
 * would take the place of.
 */
function storePrefix(value: unknown): string {
  const prefix = nonEmptyString(value, 'store.prefix')
  if (/[{}]/.test(prefix))
    throw new QwenGuardConfigError(
      'store.prefix',
      `must not contain { or } (Redis Cluster hash tags), got ${describe(prefix)}`,
    )
  return prefix
}

const METRICS_KEYS = ['registry', 'prefix']

/** `metrics`: false / absent means off; true means a registry of the guard's own and the default prefix. */
function resolveMetrics(value: unknown): ResolvedOptions['metrics'] {
  if (value === undefined || value === false) return undefined
  if (value === true) return { prefix: 'qwen_guard_' }
  const raw = object(value, 'metrics')
  knownKeys(raw, METRICS_KEYS, 'metrics')
  const prefix = raw.prefix === undefined ? 'qwen_guard_' : nonEmptyString(raw.prefix, 'metrics.prefix')
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix))
    throw new QwenGuardConfigError(
      'metrics.prefix',
      `must be a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), got ${describe(prefix)}`,
    )
  const registry = raw.registry
  if (registry !== undefined) {
    const r = registry as { metrics?: unknown; registerMetric?: unknown }
    if (
      typeof registry !== 'object' ||
      registry === null ||
      typeof r.metrics !== 'function' ||
      typeof r.registerMetric !== 'function'
    ) {
      throw new QwenGuardConfigError('metrics.registry', 'must be a prom-client Registry')
    }
    return { prefix, registry: registry as MetricsRegistry }
  }
  return { prefix }
}
