import { seededRandom } from './random.js'
import type { FaultHandle, FaultKind, FaultSpec } from './types.js'

/**
 * When a fault applies. 'before' faults replace the answer and are not charged to the windows (the
 * call is refused); 'after' faults hit a call that was accepted and charged.
 */
export type FaultPhase = 'before' | 'after'

const PHASE: Record<FaultKind, FaultPhase> = {
  'sse-error-body': 'before',
  'native-error-body': 'before',
  'internal-error': 'before',
  overloaded: 'before',
  reset: 'before',
  'stream-error': 'after',
  'stream-error-native': 'after',
  'slow-first-byte': 'after',
  hang: 'after',
}

/** Faults that only make sense in a stream (a non-streaming call is not matched). */
const STREAM_ONLY = new Set<FaultKind>(['stream-error', 'stream-error-native'])

export const FAULT_KINDS = Object.keys(PHASE) as FaultKind[]

class ActiveFault implements FaultHandle {
  fired = 0
  constructor(
    readonly id: number,
    readonly spec: FaultSpec,
  ) {}
  get exhausted(): boolean {
    return this.spec.times !== undefined && this.fired >= this.spec.times
  }
}

export class FaultTable {
  private faults: ActiveFault[] = []
  private nextId = 1
  private random: () => number

  constructor(private readonly seed: number) {
    this.random = seededRandom(seed)
  }

  add(spec: FaultSpec): FaultHandle {
    validate(spec)
    const fault = new ActiveFault(this.nextId++, { ...spec })
    this.faults.push(fault)
    return fault
  }

  remove(id?: number): void {
    this.faults = id === undefined ? [] : this.faults.filter((f) => f.id !== id)
  }

  get size(): number {
    return this.faults.length
  }

  /** The first active fault of this phase that matches the call and wins its draw; counts it as fired. */
  pick(phase: FaultPhase, account: string, model: string, stream: boolean): FaultSpec | undefined {
    if (this.faults.length === 0) return undefined
    for (const fault of this.faults) {
      const { spec } = fault
      if (fault.exhausted || PHASE[spec.kind] !== phase) continue
      if (
        (spec.account !== undefined && spec.account !== account) ||
        (spec.model !== undefined && spec.model !== model)
      )
        continue
      if (!stream && STREAM_ONLY.has(spec.kind)) continue
      if (spec.probability !== undefined && this.random() >= spec.probability) continue
      fault.fired++
      return spec
    }
    return undefined
  }

  reset(): void {
    this.faults = []
    this.random = seededRandom(this.seed)
  }
}

function validate(spec: FaultSpec): void {
  if (!(spec.kind in PHASE)) throw new Error(`fault kind must be one of ${FAULT_KINDS.join(', ')} (got ${spec.kind})`)
  if (spec.probability !== undefined && !(spec.probability >= 0 && spec.probability <= 1)) {
    throw new Error('fault probability must be between 0 and 1')
  }
  if (spec.times !== undefined && !(Number.isInteger(spec.times) && spec.times >= 0)) {
    throw new Error('fault times must be an integer >= 0')
  }
}
