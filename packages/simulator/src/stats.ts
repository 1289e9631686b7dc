import type { LaneTable } from './limits.js'
import type { SimulatorStats } from './types.js'

/** Server-wide counters; per account x model counters live in the lanes (limits.ts). */
export class GlobalStats {
  calls = 0
  inFlight = 0
  accepted = 0
  refused: Record<string, number> = {}

  refuse(code: string): void {
    this.refused[code] = (this.refused[code] ?? 0) + 1
  }

  snapshot(lanes: LaneTable, simulatedMs: number): SimulatorStats {
    const accounts: SimulatorStats['accounts'] = {}
    for (const lane of lanes.all()) {
      ;(accounts[lane.account.id] ??= {})[lane.model] = lane.snapshot()
    }
    return {
      calls: this.calls,
      inFlight: this.inFlight,
      accepted: this.accepted,
      refused: { ...this.refused },
      accounts,
      simulatedMs,
    }
  }

  /** Clears the counters; calls still in flight stay counted there. */
  reset(): void {
    this.calls = 0
    this.accepted = 0
    this.refused = {}
  }
}
