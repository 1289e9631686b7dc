// The ways of calling Qwen that `pnpm bench compare` puts side by side. Each gets its own simulator
// (same limits) and sees the same arrivals at the same moments. Scenario 1: (a)-(e) on one account.
// Scenario 2: (r) the seed's round robin over K accounts against (e) over the same K. Scenario 3:
// (f) the seed's fallback chain against (e) with the same fallbacks. Every clock here is the process's
// own: real time, or the worker's virtual clock (_virtual-clock.ts) which scales all of them alike.
import { setTimeout as sleep } from 'node:timers/promises'
import Bottleneck from 'bottleneck'
import { OpenAI } from 'openai'
import { createGuard, isQwenGuardError } from '@qwen-guard/core'
import { seeded, type Arrival } from './_compare-schedule.js'

export interface ModelLimit {
  model: string
  rpm: number
  tpm: number
}

export interface Lane extends ModelLimit {
  /** Simulator base URL. */
  url: string
  /** The first account's key (the one-account strategies use only this one). */
  apiKey: string
  /** One key per account (scenario 2: K accounts with the same limits). */
  apiKeys: string[]
  /** The requested model's fallbacks, in order (scenario 3). */
  fallbacks: ModelLimit[]
}

export interface Strategy {
  name: string
  /** Resolves true when the call was answered, false when it failed or was given up. */
  send(arrival: Arrival, signal: AbortSignal): Promise<boolean>
  close(): Promise<void>
}

function body(lane: Lane, a: Arrival, model = lane.model) {
  return { model, messages: [{ role: 'user' as const, content: a.content }], max_tokens: a.maxTokens }
}

const isRetryable = (error: unknown) =>
  error instanceof OpenAI.APIError && (error.status === 429 || (error.status ?? 0) >= 500)

/** (a) The `openai` SDK as shipped: maxRetries 2, its own backoff (0.5 s x 2^n up to 8 s, jittered). */
export function sdkAsIs(lane: Lane): Strategy {
  const client = new OpenAI({ baseURL: lane.url, apiKey: lane.apiKey, maxRetries: 2 })
  return {
    name: 'openai SDK as is (maxRetries 2)',
    async send(a, signal) {
      try {
        await client.chat.completions.create(body(lane, a), { signal })
        return true
      } catch {
        return false
      }
    },
    close: async () => undefined,
  }
}

/** The seed article's backoff around one call: on a 429 (or 5xx) wait 2^n + U(0,1) s, up to 5 retries. */
async function withSeedBackoff(
  attempt: () => Promise<unknown>,
  rand: () => number,
  signal: AbortSignal,
): Promise<boolean> {
  for (let n = 0; ; n++) {
    try {
      await attempt()
      return true
    } catch (error) {
      if (n >= 5 || !isRetryable(error) || signal.aborted) return false
      try {
        await sleep((2 ** n + rand()) * 1000, undefined, { signal })
      } catch {
        return false
      }
    }
  }
}

/** (b) The seed article's backoff: on a 429 (or 5xx) wait 2^n + U(0,1) s, up to 5 retries. */
export function seedBackoff(lane: Lane, seed: number): Strategy {
  const client = new OpenAI({ baseURL: lane.url, apiKey: lane.apiKey, maxRetries: 0 })
  const rand = seeded(seed)
  return {
    name: 'seed backoff (2^n + U(0,1) s, 5 retries)',
    send: (a, signal) => withSeedBackoff(() => client.chat.completions.create(body(lane, a), { signal }), rand, signal),
    close: async () => undefined,
  }
}

/** (r) The seed article's round robin: call i goes to account i mod K, with the seed's backoff on
 * that same account (what a list of clients and a counter in front of (b) does). */
export function seedRoundRobin(lane: Lane, seed: number): Strategy {
  const clients = lane.apiKeys.map((apiKey) => new OpenAI({ baseURL: lane.url, apiKey, maxRetries: 0 }))
  const rand = seeded(seed)
  let next = 0
  return {
    name: `seed round robin over ${clients.length} + backoff`,
    send(a, signal) {
      const client = clients[next++ % clients.length]!
      return withSeedBackoff(() => client.chat.completions.create(body(lane, a), { signal }), rand, signal)
    },
    close: async () => undefined,
  }
}

/** (f) The seed article's fallback chain: try the model, on a 429 its first fallback, then the next;
 * the call fails when the last one refuses too. No backoff, no retry of the same model. */
export function seedFallbackChain(lane: Lane): Strategy {
  const client = new OpenAI({ baseURL: lane.url, apiKey: lane.apiKey, maxRetries: 0 })
  const chain = [lane.model, ...lane.fallbacks.map((f) => f.model)]
  return {
    name: `seed fallback chain (${chain.join(' > ')})`,
    async send(a, signal) {
      for (const model of chain) {
        try {
          await client.chat.completions.create(body(lane, a, model), { signal })
          return true
        } catch (error) {
          if (!(error instanceof OpenAI.APIError && error.status === 429) || signal.aborted) return false
        }
      }
      return false
    },
    close: async () => undefined,
  }
}

/** (c) The seed article's fixed-interval queue: one FIFO, one request sent every 60/RPM s, no retry. */
export function seedFixedQueue(lane: Lane): Strategy {
  const client = new OpenAI({ baseURL: lane.url, apiKey: lane.apiKey, maxRetries: 0 })
  const intervalMs = 60_000 / lane.rpm
  const queue: { a: Arrival; signal: AbortSignal; done: (ok: boolean) => void }[] = []
  let running = false
  let closed = false
  const pump = async () => {
    running = true
    while (queue.length > 0 && !closed) {
      const job = queue.shift()!
      if (job.signal.aborted) {
        job.done(false)
        continue
      }
      client.chat.completions.create(body(lane, job.a), { signal: job.signal }).then(
        () => job.done(true),
        () => job.done(false),
      )
      await sleep(intervalMs)
    }
    running = false
  }
  return {
    name: `seed fixed-interval queue (1 per ${intervalMs} ms)`,
    send(a, signal) {
      return new Promise<boolean>((done) => {
        queue.push({ a, signal, done })
        if (!running) void pump()
      })
    },
    async close() {
      closed = true
      for (const job of queue.splice(0)) job.done(false)
    },
  }
}

/** (d) `bottleneck` as its README suggests for a rate (minTime = 60,000 / RPM ms), SDK retries on. */
export function bottleneck(lane: Lane): Strategy {
  const client = new OpenAI({ baseURL: lane.url, apiKey: lane.apiKey, maxRetries: 2 })
  const minTime = 60_000 / lane.rpm
  const limiter = new Bottleneck({ minTime })
  return {
    name: `bottleneck minTime ${minTime} + SDK retries`,
    async send(a, signal) {
      try {
        await limiter.schedule(() => client.chat.completions.create(body(lane, a), { signal }))
        return true
      } catch {
        return false
      }
    },
    async close() {
      await limiter.stop({ dropWaitingJobs: true })
    },
  }
}

/** The guard every qwen-guard strategy uses: the accounts' limits (and the fallbacks, in scenario 3)
 * and every other option at its default; one `guard.client({ user })` per user. */
function guardedCalls(lane: Lane) {
  const models = Object.fromEntries(lane.fallbacks.map((f) => [f.model, { rpm: f.rpm, tpm: f.tpm, fallback: [] }]))
  const guard = createGuard({
    upstream: { baseURL: lane.url, accounts: lane.apiKeys.map((apiKey, i) => ({ id: `acct-${i}`, apiKey })) },
    models: {
      ...models,
      [lane.model]: { rpm: lane.rpm, tpm: lane.tpm, fallback: lane.fallbacks.map((f) => f.model) },
    },
  })
  const clients = new Map<string, OpenAI>()
  return {
    call(a: Arrival, signal: AbortSignal) {
      let client = clients.get(a.user)
      if (!client) clients.set(a.user, (client = guard.client({ user: a.user })))
      return client.chat.completions.create(body(lane, a), { signal })
    },
    close: () => guard.close(),
  }
}

/** (e) qwen-guard: `guard.client({ user })`; a refused call (its queue wait would pass
 * `queue.maxWaitMs`, 10 s) is given up, as a caller that does not read Retry-After would. */
export function qwenGuard(lane: Lane): Strategy {
  const guarded = guardedCalls(lane)
  return {
    name: 'qwen-guard guard.client',
    async send(a, signal) {
      try {
        await guarded.call(a, signal)
        return true
      } catch {
        return false
      }
    },
    close: guarded.close,
  }
}

/** (g) (e) with callers that do what the guard's refusal asks: wait exactly its `retryAfterMs`
 * (the Retry-After a relayed client gets) and try again, up to 5 retries like the seed's backoff. */
export function qwenGuardRetryAfter(lane: Lane): Strategy {
  const guarded = guardedCalls(lane)
  return {
    name: 'qwen-guard + callers honour Retry-After',
    async send(a, signal) {
      for (let n = 0; ; n++) {
        try {
          await guarded.call(a, signal)
          return true
        } catch (error) {
          if (n >= 5 || !isQwenGuardError(error) || error.retryAfterMs === undefined || signal.aborted) return false
          try {
            await sleep(error.retryAfterMs, undefined, { signal })
          } catch {
            return false
          }
        }
      }
    },
    close: guarded.close,
  }
}
