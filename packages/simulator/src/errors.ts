import { randomUUID } from 'node:crypto'

/** An error answer: status and OpenAI-shaped (compatible-mode) body. */
export interface ErrorAnswer {
  status: number
  code: string
  type: string
  message: string
  param: string | null
}

/** The refusals of Model Studio docs, "Error codes", compatible-mode bodies (type = code), messages as documented. */
export const REFUSALS = {
  limit_requests: answer(429, 'limit_requests', 'Requests rate limit exceeded, please try again later.'),
  insufficient_quota: answer(
    429,
    'insufficient_quota',
    'You exceeded your current quota, please check your plan and billing details.',
  ),
  limit_burst_rate: answer(
    429,
    'limit_burst_rate',
    'Request rate increased too quickly. To ensure system stability, please adjust your client logic to scale requests more smoothly over time.',
  ),
  /** Free allowance used up. DashScope reports it natively as Throttling.AllocationQuota; the simulator
   * puts that native code in a compatible-mode body, since compatible mode has no code of its own for it. */
  free_quota: answer(429, 'Throttling.AllocationQuota', 'Free allocated quota exceeded.'),
  arrears: answer(
    400,
    'Arrearage',
    'Access denied, please make sure your account is in good standing. For details, see: https://help.aliyun.com/zh/model-studio/error-code#overdue-payment',
  ),
  free_tier_only: answer(
    403,
    'AllocationQuota.FreeTierOnly',
    'The free tier of the model has been exhausted. If you wish to continue access the model on a paid basis, please disable the "use free tier only" mode in the management console.',
  ),
  invalid_api_key: answer(401, 'invalid_api_key', 'Invalid API-key provided.', 'invalid_request_error'),
  internal_error: answer(
    500,
    'internal_error',
    'An internal error has occured, please try again later or contact service support.',
  ),
  overloaded: answer(
    503,
    'ModelServingError',
    'Too many requests. Your requests are being throttled due to system capacity limits. Please try again later.',
  ),
} satisfies Record<string, ErrorAnswer>

export type RefusalName = keyof typeof REFUSALS

function answer(status: number, code: string, message: string, type = code): ErrorAnswer {
  return { status, code, type, message, param: null }
}

/** Bad input, OpenAI-shaped: type invalid_request_error, a specific code and the offending param. */
export function badRequest(status: number, code: string, message: string, param: string | null = null): ErrorAnswer {
  return { status, code, type: 'invalid_request_error', message, param }
}

/** `{"error":{message,type,param,code},"request_id"}` as compatible mode sends it. */
export function errorBody(e: ErrorAnswer, requestId: string): string {
  return JSON.stringify({
    error: { message: e.message, type: e.type, param: e.param, code: e.code },
    request_id: requestId,
  })
}

/** Default message of a code, for injected faults that name a code but no message. */
export function messageFor(code: string): string {
  // The native code alone means the temporary TPM refusal; the free-quota text is only sent for that state.
  if (code === 'Throttling.AllocationQuota') return 'Allocated quota exceeded, please increase your quota limit.'
  for (const r of Object.values(REFUSALS)) if (r.code === code) return r.message
  if (code === 'Throttling.RateQuota') return 'Requests rate limit exceeded, please try again later.'
  if (code === 'Throttling.BurstRate') return REFUSALS.limit_burst_rate.message
  if (code === 'Throttling') return 'Requests throttling triggered.'
  return 'Requests throttling triggered.'
}

export function newRequestId(): string {
  return randomUUID()
}
