/**
 * Call ids: one string per guarded call, carried by every event of that call (`callId`) and by its
 * `CallInfo`, so an app can follow a call through its events without correlation code of its own.
 * A random prefix per process (8 hex digits) and a counter (base 36): unique within a process, and
 * across processes with overwhelming probability, at the cost of an increment per call.
 */
import { randomBytes } from 'node:crypto'

const PREFIX = randomBytes(4).toString('hex')
let counter = 0

/** A new call id, e.g. `3f9a1c07-1k`. */
export function newCallId(): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER
  return `${PREFIX}-${counter.toString(36)}`
}

/** Longest call id a caller may give (`CallOptions.callId`, the `x-qwen-guard-call-id` request header). */
export const MAX_CALL_ID_LENGTH = 128

/** What a given call id may hold. */
const CALL_ID = /^[\x21\x23-\x5b\x5d-\x7e]+$/

/** True for a usable caller-given call id. */
export function isCallId(value: unknown): value is string {
  return typeof value === 'string' && value.length <= MAX_CALL_ID_LENGTH && CALL_ID.test(value)
}

/**
 * The caller's call id, or a new one when none is given (`undefined`). A given id is 1 to 128 visible
 * ASCII characters without `"` or `\\` (it travels in the decision header's sf-string).
 * @throws TypeError for any other value (`where` names the option)
 */
export function callIdOrNew(given: unknown, where: string): string {
  if (given === undefined) return newCallId()
  if (isCallId(given)) return given
  throw new TypeError(
    `${where} must be 1 to ${MAX_CALL_ID_LENGTH} visible ASCII characters without '"' or '\\', got ${typeof given === 'string' ? JSON.stringify(given.slice(0, 40)) : typeof given}`,
  )
}
