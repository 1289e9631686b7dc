import type OpenAI from 'openai'
import { guardedCall } from './call.js'
import { createGuardedClient, createGuardedFetch, type ClientDeps } from './client.js'
import { planCall } from './cost.js'
import { createEmitter } from './events.js'
import type { CheckRequest, Guard, GuardedResponse, ModelEntry } from './guard-types.js'
import { resolveOptions } from './options.js'
import { QuotaAdmission } from './quota.js'
import { UpstreamPool } from './upstream/pool.js'
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
  const events = createEmitter()
  const quota = new QuotaAdmission({ options: resolved, emit: events.emit })
  const pool = new UpstreamPool({ options: resolved, emit: events.emit })
  const callDeps = { options: resolved, quota, pool, emit: events.emit }
  const modelList = listModels(resolved.allowedModels)

  const call = (identity: Identity, body: Record<string, unknown>, signal?: AbortSignal): Promise<GuardedResponse> =>
    guardedCall(callDeps, identity, body, signal ? { signal } : {})
  const clientDeps: ClientDeps = { options: resolved, call, models: () => modelList }

  return {
    options: resolved,
    client(identity: Identity = {}): OpenAI {
      return createGuardedClient(clientDeps, identity)
    },
    fetch(identity: Identity = {}): typeof fetch {
      return createGuardedFetch(clientDeps, identity)
    },
    call(identity, body, callOptions = {}) {
      return call(identity, body, callOptions.signal)
    },
    async check(identity: Identity, request: CheckRequest): Promise<CheckResult> {
      const plan = planCall(request, resolved)
      return quota.check(identity, { requests: 1, tokens: plan.reservedTokens, usd: plan.reservedUsd })
    },
    state(identity: Identity): Promise<QuotaState[]> {
      return quota.state(identity)
    },
    models: () => modelList,
    on: events.on,
    async close() {
      await Promise.all([pool.close(), quota.close()])
    },
  }
}

function listModels(allowed: Set<string>): ModelEntry[] {
  const created = Math.floor(Date.now() / 1000)
  return [...allowed].map((id) => ({ id, object: 'model' as const, created, owned_by: 'qwen' }))
}
