// The five ways of calling Qwen that `pnpm bench compare` puts side by side. Each gets its own
// simulator (same limits) and sees the same arrivals at the same moments. Every clock here is the
// real one: the simulator runs at timeScale 1 and no strategy's waits are scaled.
import { setTimeout as sleep } from 'node:timers/promises'
import Bottleneck from 'bottleneck'
import { OpenAI } from 'openai'
import { createGuard } from '@qwen-guard/core'
import { seeded, type Arrival } from './_compare-schedule.js'

export interface Lane {
  /** Simulator base URL. */
  url: string
  /** Account key for that simulator. */
  apiKey: string
  model: string
  rpm: number
  tpm: number
}

export interface Strategy {
  name: string
  /** Resolves true when the call was answered, false when it failed or was given up. */
  send(arrival: Arrival, signal: AbortSignal): Promise<boolean>
  close(): Promise<void>
}

function body(lane: Lane, a: Arrival) {
  return { model: lane.model, messages: [{ role: 'user' as const, content: a.content }], max_tokens: a.maxTokens }
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

/** (b) The seed article's backoff: on a 429 (or 5xx) wait 2^n + U(0,1) s, up to 5 retries. */
export function seedBackoff(lane: Lane, seed: number): Strategy {
  const client = new OpenAI({ baseURL: lane.url, apiKey: lane.apiKey, maxRetries: 0 })
  const rand = seeded(seed)
  return {
    name: 'seed backoff (2^n + U(0,1) s, 5 retries)',
    async send(a, signal) {
      for (let n = 0; ; n++) {
        try {
          await client.chat.completions.create(body(lane, a), { signal })
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

/** (e) qwen-guard: `guard.client({ user })` with the account's limits and every other option default. */
export function qwenGuard(lane: Lane): Strategy {
  const guard = createGuard({
    upstream: { baseURL: lane.url, accounts: [{ id: 'acct', apiKey: lane.apiKey }] },
    models: { [lane.model]: { rpm: lane.rpm, tpm: lane.tpm, fallback: [] } },
  })
  const clients = new Map<string, OpenAI>()
  return {
    name: 'qwen-guard guard.client',
    async send(a, signal) {
      let client = clients.get(a.user)
      if (!client) clients.set(a.user, (client = guard.client({ user: a.user })))
      try {
        await client.chat.completions.create(body(lane, a), { signal })
        return true
      } catch {
        return false
      }
    },
    close: () => guard.close(),
  }
}
