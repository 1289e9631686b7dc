import { unawaited } from './app-hook.js'
import type { GuardListener } from './guard-types.js'
import type { GuardEvent, GuardEventType } from './types.js'

export interface Emitter {
  emit(event: GuardEvent): void
  on<T extends GuardEventType>(type: T, listener: GuardListener<T>): () => void
}

/**
 * A tiny typed emitter. A listener that throws never breaks a call, and an async one that rejects
 * is treated alike (its rejection would otherwise be unhandled, which ends the process by default).
 */
export function createEmitter(): Emitter {
  const listeners = new Map<GuardEventType, Set<(event: GuardEvent) => unknown>>()
  return {
    emit(event) {
      const set = listeners.get(event.type)
      if (!set) return
      for (const listener of set) {
        try {
          unawaited(listener(event))
        } catch {
          // A listener's bug must not fail the caller's request; listeners own their error handling.
        }
      }
    },
    on(type, listener) {
      let set = listeners.get(type)
      if (!set) listeners.set(type, (set = new Set()))
      const wrapped = listener as (event: GuardEvent) => unknown
      set.add(wrapped)
      return () => set.delete(wrapped)
    },
  }
}
