/**
 * guardedCall, with a stubbed quota and pool: the early upstream acquire on Redis (the first slot is
 * asked for while the quota is checked, given back when the quota refuses), what is sent upstream,
 * the deadline and the caller's signal, and what is charged when. What happens to the slot is seen directly.
 */
import { describe, expect, it, vi } from 'vitest'
import { guardedCall, type CallDeps } from '../src/call.js'
import { QwenGuardError } from '../src/errors.js'
import { resolveOptions } from '../src/options.js'
import type { QuotaAdmission, QuotaReservation } from '../src/quota/index.js'
import type { UpstreamPool } from '../src/upstream/pool.js'
import type { AcquireRequest, UpstreamSlot } from '../src/upstream/types.js'

const body = { model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] }
const answer = JSON.stringify({
  id: 'c',
  object: 'chat.completion',
  created: 1,
  model: 'qwen-plus',
  choices: [],
  usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
})

function refusal(): QwenGuardError {
  return new QwenGuardError({
    status: 429,
    code: 'rate_limit_exceeded',
    message: 'over',
    scope: 'user',
    dimension: 'rpm',
    retryAfterMs: 1000,
  })
}

function setup(opts: {
  redis: boolean
  reserve: () => Promise<QuotaReservation>
  acquire: (req: AcquireRequest) => Promise<UpstreamSlot>
  recentlyRefused?: boolean
}) {
  const fetch = vi.fn(async (_url: string, _init: RequestInit) => new Response(answer))
  const resolved = resolveOptions({
    upstream: { baseURL: 'http://127.0.0.1:9/v1', apiKey: 'sk-x', fetch: fetch as typeof globalThis.fetch },
  })
  const options = {
    ...resolved,
    store: { ...resolved.store, ...(opts.redis ? { redis: {} as NonNullable<typeof resolved.store.redis> } : {}) },
  }
  const order: string[] = []
  const quota = {
    reserve: vi.fn(async () => {
      order.push('reserve')
      return opts.reserve()
    }),
    recentlyRefused: vi.fn(() => opts.recentlyRefused ?? false),
  }
  const pending = new Map<AcquireRequest, (reason: unknown) => void>()
  const pool = {
    acquire: vi.fn((req: AcquireRequest) => {
      order.push('acquire')
      return opts.acquire(req)
    }),
    /** Like the pool: a queued acquire (registered in `pending` by a test's acquire) rejects. */
    abandon: vi.fn((req: AcquireRequest, reason: unknown) => pending.get(req)?.(reason)),
    state: vi.fn(() => []),
  }
  const deps = {
    options,
    quota: quota as unknown as QuotaAdmission,
    pool: pool as unknown as UpstreamPool,
    emit: () => {},
  } satisfies CallDeps
  return { deps, quota, pool, fetch, order, pending }
}

function slot(): UpstreamSlot & { cancel: ReturnType<typeof vi.fn>; settle: ReturnType<typeof vi.fn> } {
  return {
    accountId: 'a',
    apiKey: 'sk-x',
    model: 'qwen-plus',
    queuedMs: 0,
    settle: vi.fn(async () => {}),
    fail: vi.fn(async () => {}),
    cancel: vi.fn(async () => {}),
  }
}

function reservation(): QuotaReservation {
  return { quota: [], settle: vi.fn(async () => {}), cancel: vi.fn(async () => {}) }
}

describe('guardedCall: the first upstream slot is asked for during admission (Redis store)', () => {
  it('asks for both before either answers, and uses that slot', async () => {
    const s = slot()
    const { deps, order, pool, fetch } = setup({
      redis: true,
      reserve: async () => reservation(),
      acquire: async () => s,
    })
    const { response } = await guardedCall(deps, { user: 'u' }, body)
    expect(await response.json()).toMatchObject({ id: 'c' })
    expect(order).toEqual(['acquire', 'reserve'])
    expect(pool.acquire).toHaveBeenCalledTimes(1)
    expect(fetch).toHaveBeenCalledTimes(1)
    expect(s.settle).toHaveBeenCalledWith(6)
    expect(s.cancel).not.toHaveBeenCalled()
  })

  it('cancels a granted slot when the quota refuses, and sends nothing', async () => {
    const s = slot()
    const { deps, fetch } = setup({
      redis: true,
      reserve: async () => Promise.reject(refusal()),
      acquire: async () => s,
    })
    await expect(guardedCall(deps, { user: 'u' }, body)).rejects.toMatchObject({ status: 429, dimension: 'rpm' })
    expect(s.cancel).toHaveBeenCalledTimes(1)
    expect(fetch).not.toHaveBeenCalled()
  })

  it('abandons a queued wait for a slot when the quota refuses', async () => {
    let request: AcquireRequest | undefined
    const context = setup({
      redis: true,
      reserve: async () => Promise.reject(refusal()),
      acquire: (req) =>
        new Promise<UpstreamSlot>((_, reject) => {
          request = req
          context.pending.set(req, reject)
        }),
    })
    await expect(guardedCall(context.deps, { user: 'u' }, body)).rejects.toMatchObject({ status: 429 })
    expect(context.pool.abandon).toHaveBeenCalledWith(request, expect.any(Error))
    expect(context.fetch).not.toHaveBeenCalled()
  })

  it("gives the early wait the caller's own signal (no controller of its own)", async () => {
    let signal: AbortSignal | undefined
    const acquire = (req: AcquireRequest) =>
      new Promise<UpstreamSlot>((_, reject) => {
        signal = req.signal
        req.signal?.addEventListener('abort', () => reject(req.signal?.reason))
      })
    const caller = new AbortController()
    const { deps } = setup({ redis: true, reserve: async () => reservation(), acquire })
    const call = guardedCall(deps, { user: 'u' }, body, { signal: caller.signal })
    expect(signal).toBe(caller.signal)
    caller.abort(new Error('client gone'))
    await expect(call).rejects.toThrow('client gone')
  })

  it('acquires after admission for an identity refused recently, and on the memory store', async () => {
    for (const variant of [{ redis: true, recentlyRefused: true }, { redis: false }]) {
      const { deps, order } = setup({ ...variant, reserve: async () => reservation(), acquire: async () => slot() })
      await guardedCall(deps, { user: 'u' }, body)
      expect(order).toEqual(['reserve', 'acquire'])
      const refused = setup({ ...variant, reserve: async () => Promise.reject(refusal()), acquire: async () => slot() })
      await expect(guardedCall(refused.deps, { user: 'u' }, body)).rejects.toMatchObject({ status: 429 })
      expect(refused.pool.acquire).not.toHaveBeenCalled()
    }
  })
})

describe('guardedCall: what is sent upstream', () => {
  const sent = (fetch: ReturnType<typeof vi.fn>) =>
    (fetch.mock.calls[0] as unknown as [string, RequestInit])[1].body as string

  it("sends the caller's own JSON text when nothing in it changes", async () => {
    const { deps, fetch } = setup({ redis: false, reserve: async () => reservation(), acquire: async () => slot() })
    const text = `{ "model": "qwen-plus",  "messages": [{"role":"user","content":"hi"}], "max_tokens": 50 }`
    await guardedCall(deps, { user: 'u' }, JSON.parse(text) as Record<string, unknown>, { text })
    expect(sent(fetch)).toBe(text)
  })

  it('adds the reserved caps a request left out, so Qwen cannot bill more than was reserved', async () => {
    const { deps, fetch } = setup({ redis: false, reserve: async () => reservation(), acquire: async () => slot() })
    const text = `{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}],"enable_thinking":true,"max_tokens":null}`
    await guardedCall(deps, { user: 'u' }, JSON.parse(text) as Record<string, unknown>, { text })
    expect(JSON.parse(sent(fetch))).toEqual({ ...JSON.parse(text), max_tokens: 1_024, thinking_budget: 4_096 })
  })

  it('sends max_completion_tokens alone as max_tokens too: the bound Qwen documents, at the reserved cap', async () => {
    const { deps, fetch } = setup({ redis: false, reserve: async () => reservation(), acquire: async () => slot() })
    const text = `{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":300}`
    await guardedCall(deps, { user: 'u' }, JSON.parse(text) as Record<string, unknown>, { text })
    expect(JSON.parse(sent(fetch))).toEqual({ ...JSON.parse(text), max_tokens: 300 })
  })

  it('rewrites the model a fallback slot serves, and asks a stream for its usage chunk', async () => {
    const fallback = { ...slot(), model: 'qwen-flash' }
    const text = JSON.stringify(body)
    const json = setup({ redis: false, reserve: async () => reservation(), acquire: async () => fallback })
    await guardedCall(json.deps, { user: 'u' }, { ...body }, { text })
    expect(JSON.parse(sent(json.fetch))).toEqual({ ...body, model: 'qwen-flash', max_tokens: 1_024 })

    const stream = setup({ redis: false, reserve: async () => reservation(), acquire: async () => slot() })
    stream.fetch.mockImplementation(async () => new Response('data: [DONE]\n\n'))
    const streamBody = { ...body, stream: true }
    await guardedCall(stream.deps, { user: 'u' }, streamBody, { text: JSON.stringify(streamBody) }).catch(
      () => undefined,
    )
    expect(JSON.parse(sent(stream.fetch))).toEqual({
      ...streamBody,
      max_tokens: 1_024,
      stream_options: { include_usage: true },
    })
  })
})

describe("guardedCall: the deadline and the caller's signal", () => {
  function hanging() {
    const s = slot()
    const context = setup({ redis: false, reserve: async () => reservation(), acquire: async () => s })
    let upstreamSignal: AbortSignal | undefined
    context.fetch.mockImplementation(
      (_url: string, init: RequestInit) =>
        new Promise<Response>((_, reject) => {
          upstreamSignal = init.signal ?? undefined
          init.signal?.addEventListener('abort', () => reject(init.signal?.reason))
        }),
    )
    return { ...context, slot: s, upstreamSignal: () => upstreamSignal }
  }

  it("aborts the upstream request at its deadline without touching the caller's signal: 504, the slot settled", async () => {
    const { deps, slot: s, upstreamSignal } = hanging()
    deps.options = { ...deps.options, upstream: { ...deps.options.upstream, timeoutMs: 50 } }
    const caller = new AbortController()
    const error = await guardedCall(deps, { user: 'u' }, body, { signal: caller.signal }).catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 504, code: 'upstream_timeout' })
    expect(upstreamSignal()?.aborted).toBe(true)
    expect(caller.signal.aborted).toBe(false)
    expect(s.settle).toHaveBeenCalledTimes(1)
  })

  it("tells a stream caller's own abort from the deadline", async () => {
    const { deps, slot: s, fetch } = hanging()
    const caller = new AbortController()
    const call = guardedCall(deps, { user: 'u' }, { ...body, stream: true }, { signal: caller.signal })
    await vi.waitFor(() => expect(fetch).toHaveBeenCalled())
    caller.abort(new Error('client gone'))
    await expect(call).rejects.toThrow('client gone')
    expect(s.settle).toHaveBeenCalledWith(expect.any(Number))
  })

  it("follows a stream caller's plain signal with a controller of its own", async () => {
    const { deps, upstreamSignal } = hanging()
    const caller = new AbortController()
    const call = guardedCall(deps, { user: 'u' }, { ...body, stream: true }, { signal: caller.signal })
    await vi.waitFor(() => expect(upstreamSignal()).toBeDefined())
    expect(upstreamSignal()).not.toBe(caller.signal)
    caller.abort(new Error('client gone'))
    await expect(call).rejects.toThrow('client gone')
    expect(upstreamSignal()?.aborted).toBe(true)
  })

  it('rejects a JSON call at its abort, while the request Qwen goes on with runs on (here, to its deadline)', async () => {
    const { deps, slot: s, upstreamSignal } = hanging()
    deps.options = { ...deps.options, upstream: { ...deps.options.upstream, timeoutMs: 300 } }
    const caller = new AbortController()
    const call = guardedCall(deps, { user: 'u' }, body, { signal: caller.signal })
    await vi.waitFor(() => expect(upstreamSignal()).toBeDefined())
    caller.abort(new Error('client gone'))
    await expect(call).rejects.toThrow('client gone')
    expect(upstreamSignal()?.aborted).toBe(false)
    expect(s.settle).not.toHaveBeenCalled() // its lease and pace are held while Qwen may still run it
    await vi.waitFor(() => expect(s.settle).toHaveBeenCalledTimes(1))
    expect(upstreamSignal()?.aborted).toBe(true) // the deadline, not the caller
  })
})
