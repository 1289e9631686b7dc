import type OpenAI from 'openai'
import { guardedAnswer, guardedCall, type CallDeps, type InternalCallOptions } from './call.js'
import { callIdOrNew } from './call-id.js'
import { createGuardedClient, createGuardedFetch, type ClientDeps } from './client/guarded-client.js'
import { planCall } from './cost.js'
import { prepareEstimator } from './estimate.js'
import { logDisabledAccounts } from './disabled-account-line.js'
import { createEmitter } from './events.js'
import { createGuardMetrics, type MetricsHandler } from './metrics.js'
import { requireIdentity } from './identity.js'
import { hideGuardInternals } from './guard-internals.js'
import type { CallOptions, CheckRequest, ClientOptions, Guard, GuardedResponse, ModelEntry } from './guard-types.js'
import { resolveOptions } from './options.js'
import { QuotaAdmission } from './quota/index.js'
import { createGuardStore } from './store.js'
import { UpstreamPool } from './upstream/pool.js'
import { UsageRecorder } from './usage/index.js'
import type { CheckResult, GuardOptions, Identity, QuotaState } from './types.js'

/**
 * Creates a guard: one per process, shared by every route that calls Qwen.
 *
 * @example
 * const guard = createGuard({
 *   upstream: { accounts: [{ id: 'main', apiKey: process.env.DASHSCOPE_API_KEY! }] },
 *   models: { 'qwen3-max': { fallback: ['qwen-plus'] } },
 *   quotas: { user: { rpm: 20, tpm: 40_000, concurrency: 2 } },
 * })
 * const client = guard.client({ user: 'u1' })
 * await client.chat.completions.create({ model: 'qwen3-max', messages: [{ role: 'user', content: 'Hi' }] })
 */
export function createGuard(options: GuardOptions): Guard {
  const resolved = resolveOptions(options)
  prepareEstimator() // the first call must not wait for the estimator's word filter
  const events = createEmitter()
  // One store for quotas, leases and pace meters: one health tracker, one store_error per outage.
  const store = createGuardStore(resolved.store, events.emit)
  const quota = new QuotaAdmission({ options: resolved, emit: events.emit, store })
  const pool = new UpstreamPool({ options: resolved, emit: events.emit, store })
  const usage = resolved.usage ? new UsageRecorder(resolved, resolved.usage, store) : undefined
  if (usage) events.on('upstream_refusal', usage.onEvent)
  const metrics = resolved.metrics ? createGuardMetrics(resolved.metrics, events, () => pool.state()) : undefined
  const disabledLine = logDisabledAccounts(events, resolved)
  const callDeps: CallDeps = { options: resolved, quota, pool, emit: events.emit }
  if (usage) callDeps.usage = usage
  if (metrics) callDeps.overhead = (seconds) => metrics.overhead(seconds)
  const modelList = listModels(resolved.allowedModels)
  const call = guardedCall

  const clientDeps: ClientDeps = {
    options: resolved,
    call: (identity, body, callOptions) => call(callDeps, identity, body, callOptions),
    models: () => modelList,
  }
  const clients = new ClientCache()

  const guard: Guard = {
    client(identity: Identity, options?: ClientOptions): OpenAI {
      const who = requireIdentity(identity)
      if (options?.clientGone) return createGuardedClient(clientDeps, { ...who }, options.clientGone)
      return clients.get(clientDeps, who)
    },
    fetch(identity: Identity): typeof fetch {
      return createGuardedFetch(clientDeps, { ...requireIdentity(identity) })
    },
    async call(identity, body, options): Promise<GuardedResponse> {
      return call(callDeps, requireIdentity(identity), body, internalCallOptions(options))
    },
    async check(identity: Identity, request: CheckRequest): Promise<CheckResult> {
      const who = requireIdentity(identity)
      const plan = planCall(request, resolved)
      return quota.check(who, { requests: 1, tokens: plan.reservedTokens, usd: plan.reservedUsd })
    },
    async state(identity: Identity): Promise<QuotaState[]> {
      return quota.state(requireIdentity(identity))
    },
    models: () => modelList,
    on(type, listener) {
      if (type === 'account_disabled') disabledLine.appListens()
      return events.on(type, listener)
    },
    metrics(): MetricsHandler {
      if (!metrics)
        throw new Error(
          'guard.metrics() needs metrics turned on: createGuard({ ..., metrics: true }) (and prom-client installed)',
        )
      return metrics.handler()
    },
    async usageReport(period) {
      if (!usage)
        throw new Error('guard.usageReport() needs the usage recorder: it is off (createGuard({ usage: false }))')
      return usage.report(period)
    },
    async close() {
      await Promise.all([pool.close(), quota.close()])
      store.close()
    },
  }
  hideGuardInternals(guard, {
    options: resolved,
    async answer(identity, body, options) {
      return guardedAnswer(callDeps, requireIdentity(identity), body, internalCallOptions(options))
    },
  })
  return guard
}

/** `guard.call`'s options as the call layer takes them (a callId checked or made). */
function internalCallOptions({ signal, clientGone, callId }: CallOptions = {}): InternalCallOptions {
  const options: InternalCallOptions = { callId: callIdOrNew(callId, 'callId') }
  if (signal) options.signal = signal
  if (clientGone) options.clientGone = clientGone
  return options
}

function listModels(allowed: Set<string>): ModelEntry[] {
  const created = Math.floor(Date.now() / 1000)
  return [...allowed].map((id) => ({ id, object: 'model' as const, created, owned_by: 'qwen' }))
}

/** Clients kept per identity; past this many the cache starts over (a miss only costs a construction). */
const CLIENT_CACHE_SIZE = 1_000

/**
 * `guard.client()` is called once per request by the adapters (`req.qwen`, `ctx.qwen`), and an
 * `openai` client is costly to build (environment reads, ~30 resource objects) and to warm up on its
 * first request (figures in bench/RESULTS.md). So clients are kept per identity, for identities
 * made only of `user` and `key` (copied, so a caller's later change to its object changes nothing).
 * An identity with other fields (read by a `quotas` function, say) gets a client of its own, as before.
 */
class ClientCache {
  private readonly byIdentity = new Map<string, OpenAI>()

  /** `identity` has passed `requireIdentity`. */
  get(deps: ClientDeps, identity: Identity): OpenAI {
    const key = cacheKey(identity)
    if (key === undefined) return createGuardedClient(deps, { ...identity })
    let client = this.byIdentity.get(key)
    if (!client) {
      if (this.byIdentity.size >= CLIENT_CACHE_SIZE) this.byIdentity.clear()
      // A copy of the two parts (and of what was given for them: identity.ts, givenIdentity).
      const copy: Identity = { ...identity }
      client = createGuardedClient(deps, copy)
      this.byIdentity.set(key, client)
    }
    return client
  }
}

/** A key for a `{ user, key? }` identity (checked: strings); undefined for any other shape. */
function cacheKey(identity: Identity): string | undefined {
  for (const field in identity) if (field !== 'user' && field !== 'key') return undefined
  const { user = '', key } = identity
  // Unambiguous whatever the strings hold: the user part is length-prefixed, '-' marks a missing key.
  return `${user.length}:${user}|${key === undefined ? '-' : `+${key}`}`
}
