/**
 * The page's chat calls in progress, per demo user: how many wait for the guard (quota reserved,
 * waiting in the fair queue or for upstream), how many stream an answer, and the tokens the guard
 * reserved for the streaming ones (`reservedTokens` of its `admitted` event, held until `settled`).
 *
 * `guard.state(identity)` already reflects every reservation in its remaining counts (the tokens
 * window is charged `max_tokens` up front and refunded at settlement; the concurrency lease is held
 * until the answer ends), but it does not say how much of a window is only reserved, nor which calls
 * are in progress. The guard's events carry no call id, so pairing `admitted` with `settled` by
 * identity would mix up a user's parallel calls; the chat route knows where each of its own calls
 * starts and ends, so it reports them here.
 */

export interface LiveCall {
  /** The guard answered: the answer streams; `reservedTokens` is what the guard reserved for it. */
  streaming(reservedTokens: number): void
  /** The call is over (answered, refused, failed or abandoned). Idempotent. */
  end(): void
}

export interface LiveSummary {
  /** Calls waiting for the guard's admission or the upstream's capacity. */
  waiting: number
  /** Calls whose answer is streaming to the page. */
  streaming: number
  /** Tokens the guard holds in reserve for the streaming calls (settled to the real use when each ends). */
  reservedTokens: number
}

interface Entry {
  phase: 'waiting' | 'streaming'
  reservedTokens: number
}

export class LiveCalls {
  readonly #byUser = new Map<string, Set<Entry>>()

  /** Registers a call of `user` that has just been sent to the guard. */
  start(user: string): LiveCall {
    const entry: Entry = { phase: 'waiting', reservedTokens: 0 }
    let entries = this.#byUser.get(user)
    if (!entries) this.#byUser.set(user, (entries = new Set()))
    entries.add(entry)
    return {
      streaming: (reservedTokens) => {
        entry.phase = 'streaming'
        entry.reservedTokens = reservedTokens
      },
      end: () => {
        const current = this.#byUser.get(user)
        if (!current?.delete(entry)) return
        if (current.size === 0) this.#byUser.delete(user)
      },
    }
  }

  summary(user: string): LiveSummary {
    const summary: LiveSummary = { waiting: 0, streaming: 0, reservedTokens: 0 }
    for (const entry of this.#byUser.get(user) ?? []) {
      if (entry.phase === 'waiting') summary.waiting++
      else {
        summary.streaming++
        summary.reservedTokens += entry.reservedTokens
      }
    }
    return summary
  }
}
