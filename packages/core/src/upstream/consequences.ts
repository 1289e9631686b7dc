/**
 * What a refusal does to the lane (account x model) that got it: transient kinds cool it down (burst
 * also halves its pace), terminal kinds disable it (or the whole account) for `disableMs`, or until
 * the announced reset time for a plan quota. Effects are on the lane and in events; the returned
 * `LaneEffect` is what the pool tells other instances (shared-lane-state.ts).
 */
import type { GuardEvent } from '../types.js'
import { cooldownMs } from './cooldown.js'
import type { Lane } from './lane.js'
import type { LaneEffect } from './shared-lane-state.js'
import type { UpstreamRefusal } from './types.js'

export interface ConsequenceContext {
  /** The call whose refusal this is (the events' `callId`). */
  callId: string
  now: number
  disableMs: number
  timeScale: number
  emit: (event: GuardEvent) => void
}

export function applyRefusal(lane: Lane, refusal: UpstreamRefusal, ctx: ConsequenceContext): LaneEffect {
  if (refusal.terminal) return disable(lane, refusal, ctx)
  const kind = refusal.kind
  const transient =
    kind === 'requests' ||
    kind === 'tokens' ||
    kind === 'throttling' ||
    kind === 'burst' ||
    kind === 'server' ||
    kind === 'timeout' ||
    kind === 'network'
  let cooldown = 0
  if (transient) {
    lane.consecutive++
    cooldown = cooldownMs({
      kind,
      consecutive: lane.consecutive,
      limits: lane.limits(),
      timeScale: ctx.timeScale,
      ...(refusal.retryAfterMs !== undefined ? { hintMs: refusal.retryAfterMs } : {}),
    })
    lane.coolingUntil = Math.max(lane.coolingUntil, ctx.now + cooldown)
    if (kind === 'burst') lane.control.decrease(ctx.now)
  }
  ctx.emit({
    type: 'upstream_refusal',
    callId: ctx.callId,
    account: lane.owner.account.id,
    model: lane.model.name,
    status: refusal.status,
    kind,
    retryable: refusal.retryable,
    cooldownMs: Math.ceil(cooldown),
    ...(refusal.code ? { code: refusal.code } : {}),
  })
  return { coolMs: cooldown, disableMs: 0, accountDisableMs: 0, burst: kind === 'burst' }
}

/** Longest a reset time read from Qwen's message may disable a lane: a plan quota resets within a month. */
export const MAX_QUOTA_RESET_MS = 31 * 86_400_000

function disable(lane: Lane, refusal: UpstreamRefusal, ctx: ConsequenceContext): LaneEffect {
  const announced =
    refusal.kind === 'quota_reset' && refusal.resetAt !== undefined && refusal.resetAt > ctx.now
      ? refusal.resetAt
      : undefined
  const resetAt = announced === undefined ? undefined : Math.min(announced, ctx.now + MAX_QUOTA_RESET_MS)
  const until = resetAt ?? ctx.now + ctx.disableMs
  const wholeAccount = refusal.reach === 'account'
  // Calls in flight when Qwen refused are refused alike: one `account_disabled` for the disable, and
  // another only when a refusal puts it out for longer (by more than a minute: another state).
  const before = wholeAccount ? lane.owner.disabledUntil : lane.disabledUntil
  const wasDisabled = before > ctx.now && until <= before + 60_000
  if (wholeAccount) lane.owner.disabledUntil = Math.max(lane.owner.disabledUntil, until)
  else lane.disabledUntil = Math.max(lane.disabledUntil, until)
  const account = lane.owner.account.id
  ctx.emit({
    type: 'upstream_refusal',
    callId: ctx.callId,
    account,
    model: lane.model.name,
    status: refusal.status,
    kind: refusal.kind,
    retryable: refusal.retryable,
    cooldownMs: Math.ceil(until - ctx.now),
    ...(refusal.code ? { code: refusal.code } : {}),
  })
  // model '*': the whole account (every model) is out.
  if (!wasDisabled)
    ctx.emit({
      type: 'account_disabled',
      callId: ctx.callId,
      account,
      model: wholeAccount ? '*' : lane.model.name,
      kind: refusal.kind,
      untilMs: until,
    })
  const ms = until - ctx.now
  return { coolMs: 0, disableMs: wholeAccount ? 0 : ms, accountDisableMs: wholeAccount ? ms : 0, burst: false }
}
