/**
 * What the guard did with one chat call (queued? for how long? which model?), for the page's burst
 * panel. The guard reports these as events without a request id, so each route runs its call inside
 * an AsyncLocalStorage context and the listeners below file every event under the call whose async
 * chain emitted it. Parallel calls of the same user stay apart this way, which matching events by
 * identity could not do.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import type { Guard } from '@qwen-guard/core'

export interface CallTrace {
  /** Position in the fair queue when the call had to wait for upstream capacity. */
  queuedPosition?: number
  /** When (epoch ms) the call joined the fair queue, so a refusal after queueing can say how long it waited. */
  queuedAt?: number
  /** Time spent waiting for upstream capacity (0 when admitted at once). */
  queuedMs?: number
  /** Tokens the guard reserved for the call (its `max_tokens` plus the prompt estimate), from `admitted`. */
  reservedTokens?: number
  /** The model that was admitted, from the guard's `admitted` event. */
  admittedModel?: string
  /** Why a fallback served the call, from the guard's `fallback` event. */
  fallbackReason?: string
  fallbackModel?: string
}

const storage = new AsyncLocalStorage<CallTrace>()

/** Runs `fn` with a fresh trace that the guard's events fill in. */
export function traceCall<T>(fn: () => Promise<T>): { trace: CallTrace; result: Promise<T> } {
  const trace: CallTrace = {}
  return { trace, result: storage.run(trace, fn) }
}

/** Subscribes the trace collectors once per guard; returns the unsubscribe function. */
export function collectTraces(guard: Guard): () => void {
  const offs = [
    guard.on('queued', (event) => {
      const trace = storage.getStore()
      if (!trace) return
      trace.queuedAt ??= Date.now()
      trace.queuedPosition ??= event.position
    }),
    guard.on('admitted', (event) => {
      const trace = storage.getStore()
      // A retried call is admitted again; the first admission is the one the visitor waited for.
      if (!trace || trace.admittedModel !== undefined) return
      trace.admittedModel = event.model
      trace.queuedMs = event.queuedMs
      trace.reservedTokens = event.reservedTokens
    }),
    guard.on('fallback', (event) => {
      const trace = storage.getStore()
      if (!trace) return
      trace.fallbackModel = event.served
      trace.fallbackReason = event.reason
    }),
  ]
  return () => {
    for (const off of offs) off()
  }
}
