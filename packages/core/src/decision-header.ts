/**
 * The decision header (`headers: { decision: true }`, docs/http.md): `x-qwen-guard-decision` on
 * every answer of a chat call, an RFC 8941 structured field (an Item: a Token with Parameters)
 * naming what the guard decided and the limit that bound the call, for debugging from the client:
 *   admitted;queued-ms=120;binding="user-tpm";call-id="3f9a1c07-1k"
 *   shadow_refused;queued-ms=0;binding="user-rpm";call-id="3f9a1c07-1l"
 *   refused;binding="user-rpm";call-id="3f9a1c07-1m"
 * A refusal carries it in the QwenGuardError's own `headers`, so every way the error is answered
 * (`toHttp()`: the relay, Express `guard.errors`, the Koa middleware; the SDK's `err.headers`) has it.
 */
import type { QwenGuardError } from './errors.js'
import { DECISION_HEADER, policyName } from './http-answer.js'
import type { CallInfo, Dimension, Scope } from './types.js'

/** `headers` with the decision header of an answered call added when `on`; `headers` itself. */
export function withDecision(headers: Record<string, string>, info: CallInfo, on: boolean): Record<string, string> {
  if (on) headers[DECISION_HEADER] = admittedDecision(info)
  return headers
}

/** The header's value for an answered call: `admitted` or `shadow_refused`. */
export function admittedDecision(info: CallInfo): string {
  const shadow = info.shadowRefused
  const binding = shadow ? limitName(shadow.scope, shadow.dimension) : info.binding
  return (
    `${shadow ? 'shadow_refused' : 'admitted'};queued-ms=${Math.max(0, Math.round(info.queuedMs))}` +
    (binding === undefined ? '' : `;binding=${sfString(binding)}`) +
    `;call-id=${sfString(info.callId)}`
  )
}

/**
 * Marks a refusal with its decision header (once: the first mark, made closest to where the call
 * was refused, stays). `callId`: absent for a request refused before it became a call (validation).
 */
export function markRefusal(error: QwenGuardError, callId?: string): void {
  const headers = error.headers as Headers | undefined
  if (!headers || headers.has(DECISION_HEADER)) return
  const binding = limitName(error.scope, error.dimension)
  headers.set(
    DECISION_HEADER,
    `refused;binding=${sfString(binding)}` + (callId === undefined ? '' : `;call-id=${sfString(callId)}`),
  )
}

/** `user-rpm`, `upstream-queue`, `request-context`; the scope alone when there is no dimension. */
function limitName(scope: Scope, dimension: Dimension | undefined): string {
  return dimension === undefined ? scope : policyName({ scope, dimension })
}

/** An RFC 8941 sf-string: printable ASCII between quotes, `"` and `\` escaped. */
function sfString(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, '').replace(/[\\"]/g, (c) => `\\${c}`)}"`
}
