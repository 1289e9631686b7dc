import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { SimClock } from './clock.js'
import { FaultTable } from './faults.js'
import { LaneTable } from './limits.js'
import { resolveOptions } from './options.js'
import { createHandler, type SimState } from './server.js'
import { GlobalStats } from './stats.js'
import type { AccountState, FaultHandle, Simulator, SimulatorOptions } from './types.js'

export type {
  AccountOptions,
  AccountState,
  BurstOptions,
  FaultHandle,
  FaultKind,
  FaultSpec,
  ModelLimits,
  MinuteStats,
  ModelStats,
  ResolvedLimits,
  Simulator,
  SimulatorOptions,
  SimulatorStats,
} from './types.js'
export { FAULT_KINDS } from './faults.js'
export { countPromptTokens, countTextTokens, TOKENS_PER_MESSAGE, TOKENS_PER_REPLY } from './tokens.js'
export { builtinLimits } from './models.js'

/**
 * Starts a DashScope compatible-mode stand-in on loopback. Resolves once it listens.
 *
 * ```ts
 * const sim = await startSimulator({ timeScale: 60 })
 * const client = new OpenAI({ baseURL: sim.url, apiKey: 'sk-sim' })
 * ```
 */
export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const resolved = resolveOptions(options)
  const state: SimState = {
    options: resolved,
    clock: new SimClock(resolved.timeScale),
    lanes: new LaneTable(resolved.burst),
    faults: new FaultTable(resolved.seed),
    stats: new GlobalStats(),
  }
  for (const fault of resolved.faults) state.faults.add(fault)
  const accountStates = new Map(resolved.accounts.map((a) => [a.id, a.state])) // restored by reset()
  const server = createServer({ keepAliveTimeout: 10_000 }, createHandler(state))
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(resolved.port, resolved.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const host = resolved.host.includes(':') ? `[${resolved.host}]` : resolved.host

  return {
    url: `http://${host}:${port}/compatible-mode/v1`,
    port,
    stats: () => state.stats.snapshot(state.lanes, state.clock.now()),
    reset() {
      state.lanes.clear()
      state.stats.reset()
      state.faults.reset()
      state.clock.reset()
      for (const account of resolved.accounts) account.state = accountStates.get(account.id) ?? 'ok'
    },
    inject: (fault) => state.faults.add(fault),
    clearFaults: (fault?: FaultHandle | number) => state.faults.remove(typeof fault === 'object' ? fault.id : fault),
    setAccountState(accountId: string, accountState: AccountState) {
      const account = resolved.accounts.find((a) => a.id === accountId)
      if (!account) throw new Error(`setAccountState: no account ${accountId}`)
      account.state = accountState
    },
    now: () => state.clock.now(),
    advance: (ms: number) => state.clock.advance(ms),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()))
        server.closeAllConnections() // hanging calls and idle keep-alive sockets too
      }),
  }
}
