// Scenario 4 of `pnpm bench compare`: is the guard's `retryAfterMs` exact? Clients over their own
// quota (user rps) retry after exactly the wait the refusal named, or 20 ms early. DESIGN.md: "A
// client that waits exactly that long must succeed." Waiting 20 ms early should be refused again
// (else the wait was padded). The upstream account has room to spare, so only the user quota binds.
// Real time, guard and simulator in this process.
import { setTimeout as sleep } from 'node:timers/promises'
import { createGuard, isQwenGuardError } from '@qwen-guard/core'
import { startSimulator } from '@qwen-guard/simulator'

export interface ExactnessRow {
  client: string
  calls: number
  refusals: number
  /** Retries made after waiting (retryAfterMs + offset). */
  retries: number
  /** Of those, refused again. */
  refusedAgain: number
}

export async function runExactness(durationMs: number, users = 6, userRps = 2): Promise<ExactnessRow[]> {
  const sim = await startSimulator({
    accounts: [{ id: 'acct', keys: ['sk-bench'] }],
    limits: { 'qwen-plus': { rpm: 6_000, tpm: 10_000_000 } },
  })
  const guard = createGuard({
    upstream: { baseURL: sim.url, accounts: [{ id: 'acct', apiKey: 'sk-bench' }] },
    models: { 'qwen-plus': { rpm: 6_000, tpm: 10_000_000, fallback: [] } },
    quotas: { user: { rpm: 6_000, rps: userRps } }, // only the per-second quota binds: waits under 1 s
  })
  const stopAt = Date.now() + durationMs
  const client = async (name: string, offsetMs: number): Promise<ExactnessRow> => {
    const row: ExactnessRow = { client: name, calls: 0, refusals: 0, retries: 0, refusedAgain: 0 }
    const openai = guard.client({ user: name })
    let retrying = false
    while (Date.now() < stopAt) {
      row.calls++
      if (retrying) row.retries++
      try {
        await openai.chat.completions.create({
          model: 'qwen-plus',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 8,
        })
        retrying = false
      } catch (error) {
        if (!isQwenGuardError(error) || error.retryAfterMs === undefined) throw error
        row.refusals++
        if (retrying) row.refusedAgain++
        retrying = true
        const wait = Math.max(0, error.retryAfterMs + offsetMs)
        if (Date.now() + wait >= stopAt) break
        await sleep(wait)
      }
    }
    return row
  }
  const rows = await Promise.all(
    Array.from({ length: users }, (_, u) => client(u % 2 === 0 ? `exact-${u}` : `early-${u}`, u % 2 === 0 ? 0 : -20)),
  )
  await guard.close()
  await sim.close()
  const sum = (prefix: string, label: string): ExactnessRow =>
    rows
      .filter((r) => r.client.startsWith(prefix))
      .reduce(
        (a, r) => ({
          client: label,
          calls: a.calls + r.calls,
          refusals: a.refusals + r.refusals,
          retries: a.retries + r.retries,
          refusedAgain: a.refusedAgain + r.refusedAgain,
        }),
        {
          client: label,
          calls: 0,
          refusals: 0,
          retries: 0,
          refusedAgain: 0,
        },
      )
  return [sum('exact', 'retry after exactly retryAfterMs'), sum('early', 'retry 20 ms before retryAfterMs')]
}
