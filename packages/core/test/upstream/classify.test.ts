import { describe, expect, it } from 'vitest'
import { backoffDelay } from '../../src/upstream/backoff.js'
import { classifyRefusal } from '../../src/upstream/classify.js'
import type { RefusalKind } from '../../src/upstream/types.js'

const compat = (code: string, message: string) =>
  JSON.stringify({ error: { message, type: code, param: null, code }, request_id: 'r' })
const native = (code: string, message: string) => JSON.stringify({ code, message, request_id: 'r' })
const sse = (code: string, message: string) => `data: ${JSON.stringify({ error: { code, message, type: code } })}\n\n`
const nativeFrame = (status: number, code: string, message: string) =>
  `id:1\nevent:error\n:HTTP_STATUS/${status}\ndata:${JSON.stringify({ code, message, request_id: 'r' })}\n\n`

const NOW = Date.UTC(2025, 6, 14, 12, 0, 0)

const table: Array<[string, number, string, RefusalKind, { retryable: boolean; terminal: boolean }]> = [
  [
    'compat limit_requests',
    429,
    compat('limit_requests', 'You exceeded your current requests list.'),
    'requests',
    { retryable: true, terminal: false },
  ],
  [
    'native RateQuota',
    429,
    native('Throttling.RateQuota', 'Requests rate limit exceeded, please try again later.'),
    'requests',
    { retryable: true, terminal: false },
  ],
  [
    'message only: request limit',
    429,
    native('X', 'You have exceeded your request limit'),
    'requests',
    { retryable: true, terminal: false },
  ],
  [
    'compat burst',
    429,
    compat('limit_burst_rate', 'Request rate increased too quickly. To ensure system stability...'),
    'burst',
    { retryable: true, terminal: false },
  ],
  [
    'native burst',
    429,
    native('Throttling.BurstRate', 'Request rate increased too quickly.'),
    'burst',
    { retryable: true, terminal: false },
  ],
  [
    'compat insufficient_quota (TPM, temporary)',
    429,
    compat('insufficient_quota', 'You exceeded your current quota, please check your plan'),
    'tokens',
    { retryable: true, terminal: false },
  ],
  [
    'native allocated quota (TPM)',
    429,
    native('Throttling.AllocationQuota', 'Allocated quota exceeded, please increase your quota limit.'),
    'tokens',
    { retryable: true, terminal: false },
  ],
  [
    'generic throttling',
    429,
    native('Throttling', 'Requests throttling triggered.'),
    'throttling',
    { retryable: true, terminal: false },
  ],
  [
    'free quota',
    429,
    native('Throttling.AllocationQuota', 'Free allocated quota exceeded.'),
    'free_quota',
    { retryable: true, terminal: true },
  ],
  [
    'plan quota with reset time',
    429,
    native('Throttling.AllocationQuota', 'The quota has been exhausted. The quota will reset at 07-15 00:00:00 UTC'),
    'quota_reset',
    { retryable: true, terminal: true },
  ],
  [
    'prepaid bill overdue',
    429,
    native('PrepaidBillOverdue', 'The prepaid bill is overdue.'),
    'billing',
    { retryable: true, terminal: true },
  ],
  [
    'postpaid bill overdue',
    429,
    native('PostpaidBillOverdue', 'The postpaid bill is overdue.'),
    'billing',
    { retryable: true, terminal: true },
  ],
  [
    'commodity not purchased',
    429,
    native('CommodityNotPurchased', 'Commodity has not purchased yet.'),
    'billing',
    { retryable: true, terminal: true },
  ],
  [
    'free tier only',
    403,
    native('AllocationQuota.FreeTierOnly', 'The free tier of the model has been exhausted.'),
    'free_tier_only',
    { retryable: true, terminal: true },
  ],
  [
    'arrears (compat)',
    400,
    compat('Arrearage', 'Access denied, please make sure your account is in good standing.'),
    'arrears',
    { retryable: true, terminal: true },
  ],
  [
    'invalid key (compat)',
    401,
    compat('invalid_api_key', 'Incorrect API key provided.'),
    'invalid_key',
    { retryable: true, terminal: true },
  ],
  [
    'invalid key (native)',
    401,
    native('InvalidApiKey', 'Invalid API-key provided.'),
    'invalid_key',
    { retryable: true, terminal: true },
  ],
  [
    'moderation (compat)',
    400,
    compat('data_inspection_failed', 'Input data may contain inappropriate content.'),
    'moderation',
    { retryable: false, terminal: false },
  ],
  [
    'moderation (native)',
    400,
    native('DataInspectionFailed', 'Input data may contain inappropriate content.'),
    'moderation',
    { retryable: false, terminal: false },
  ],
  [
    'other 400',
    400,
    compat('invalid_parameter_error', 'Range of max_tokens should be [1, 8192]'),
    'invalid_request',
    { retryable: false, terminal: false },
  ],
  [
    'model serving error',
    503,
    native('ModelServingError', 'Too many requests. Your requests exceed the system capacity limits.'),
    'server',
    { retryable: true, terminal: false },
  ],
  [
    'model unavailable',
    503,
    native('ModelUnavailable', 'Model is unavailable'),
    'server',
    { retryable: true, terminal: false },
  ],
  [
    'internal error',
    500,
    compat('internal_error', 'An internal error has occured'),
    'server',
    { retryable: true, terminal: false },
  ],
  ['502 html', 502, '<html>Bad Gateway</html>', 'server', { retryable: true, terminal: false }],
  ['504 empty', 504, '', 'timeout', { retryable: true, terminal: false }],
  ['network failure', 0, 'fetch failed: ECONNRESET', 'network', { retryable: true, terminal: false }],
  ['network timeout', 0, 'The operation was aborted due to timeout', 'timeout', { retryable: true, terminal: false }],
  ['bare 429', 429, '', 'throttling', { retryable: true, terminal: false }],
  [
    'SSE-text 429 body',
    429,
    sse('limit_requests', 'Requests rate limit exceeded'),
    'requests',
    { retryable: true, terminal: false },
  ],
  [
    'SSE-text with CRLF',
    429,
    sse('limit_burst_rate', 'Request rate increased too quickly').replace(/\n/g, '\r\n'),
    'burst',
    { retryable: true, terminal: false },
  ],
  [
    'error inside a 200 stream',
    200,
    JSON.stringify({
      error: { code: 'limit_burst_rate', message: 'Request rate increased too quickly', type: 'limit_burst_rate' },
    }),
    'burst',
    { retryable: true, terminal: false },
  ],
  [
    'native framing inside a 200 stream',
    200,
    nativeFrame(429, 'Throttling.AllocationQuota', 'Allocated quota exceeded, please increase your quota limit.'),
    'tokens',
    { retryable: true, terminal: false },
  ],
  [
    'native framing, free quota',
    200,
    nativeFrame(429, 'Throttling.AllocationQuota', 'Free allocated quota exceeded.'),
    'free_quota',
    { retryable: true, terminal: true },
  ],
  [
    'case-insensitive message',
    429,
    native('', 'REQUEST RATE INCREASED TOO QUICKLY'),
    'burst',
    { retryable: true, terminal: false },
  ],
  ['unknown 418', 418, 'teapot', 'unknown', { retryable: false, terminal: false }],
]

describe('classifyRefusal', () => {
  for (const [name, status, body, kind, flags] of table) {
    it(`${name} -> ${kind}`, () => {
      const refusal = classifyRefusal({ status, body }, NOW)
      expect(refusal.kind).toBe(kind)
      expect(refusal.retryable).toBe(flags.retryable)
      expect(refusal.terminal).toBe(flags.terminal)
    })
  }

  it('native framing carries the real status inside a 200 stream', () => {
    expect(classifyRefusal({ status: 200, body: nativeFrame(429, 'Throttling.RateQuota', 'x') }).status).toBe(429)
  })

  it('reach: whole account for billing / arrears / invalid key, account x model for quotas', () => {
    expect(classifyRefusal({ status: 400, body: compat('Arrearage', 'x') }).reach).toBe('account')
    expect(
      classifyRefusal({ status: 429, body: native('Throttling.AllocationQuota', 'Free allocated quota exceeded.') })
        .reach,
    ).toBe('account_model')
    expect(classifyRefusal({ status: 429, body: compat('limit_requests', 'x') }).reach).toBe('none')
  })

  it('parses the reset time of an exhausted plan quota (UTC, next occurrence)', () => {
    const r = classifyRefusal(
      {
        status: 429,
        body: native(
          'Throttling.AllocationQuota',
          'The quota has been exhausted. The quota will reset at 07-15 00:00:00 UTC. See https://help',
        ),
      },
      NOW,
    )
    expect(r.resetAt).toBe(Date.UTC(2025, 6, 15, 0, 0, 0))
    const wrap = classifyRefusal(
      { status: 429, body: native('Throttling.AllocationQuota', 'The quota will reset at 01-01 00:00:00 UTC') },
      Date.UTC(2025, 11, 31, 20),
    )
    expect(wrap.resetAt).toBe(Date.UTC(2026, 0, 1))
  })

  it('reads retry-after-ms first, then Retry-After in seconds or as a date', () => {
    const body = compat('limit_requests', 'x')
    expect(
      classifyRefusal({ status: 429, body, headers: new Headers({ 'retry-after-ms': '1500', 'retry-after': '9' }) })
        .retryAfterMs,
    ).toBe(1500)
    expect(classifyRefusal({ status: 429, body, headers: { 'Retry-After': '2' } }).retryAfterMs).toBe(2000)
    const date = new Date(NOW + 3_000).toUTCString()
    expect(classifyRefusal({ status: 429, body, headers: { 'retry-after': date } }, NOW).retryAfterMs).toBe(3000)
    expect(classifyRefusal({ status: 429, body }).retryAfterMs).toBeUndefined()
  })

  it('caps an asked-for wait at maxRetryAfterMs (default 60 s) and ignores garbage', () => {
    const body = compat('limit_requests', 'x')
    expect(classifyRefusal({ status: 429, body, headers: { 'retry-after': '86400' } }).retryAfterMs).toBe(60_000)
    expect(
      classifyRefusal({ status: 429, body, headers: { 'retry-after': '86400' }, maxRetryAfterMs: 5_000 }).retryAfterMs,
    ).toBe(5_000)
    expect(classifyRefusal({ status: 429, body, headers: { 'retry-after-ms': '1e400' } }).retryAfterMs).toBeUndefined()
    expect(
      classifyRefusal({ status: 429, body, headers: { 'retry-after': '9'.repeat(400) } }).retryAfterMs,
    ).toBeUndefined()
    const farDate = new Date(NOW + 86_400_000 * 365).toUTCString()
    expect(classifyRefusal({ status: 429, body, headers: { 'retry-after': farDate } }, NOW).retryAfterMs).toBe(60_000)
    for (const garbage of ['-1', 'soon', 'NaN', '  ', '1,5', '0x10']) {
      expect(
        classifyRefusal({ status: 429, body, headers: { 'retry-after': garbage, 'retry-after-ms': garbage } })
          .retryAfterMs,
      ).toBeUndefined()
    }
  })

  it("repeats only an upstream code shaped like Qwen's, short, and holding no secret", () => {
    const code = (value: string, secrets?: string[]) =>
      classifyRefusal({
        status: 400,
        body: JSON.stringify({ error: { code: value, message: 'm' } }),
        ...(secrets ? { secrets } : {}),
      }).code
    expect(code('Throttling.AllocationQuota')).toBe('Throttling.AllocationQuota')
    expect(code('InvalidParameter')).toBe('InvalidParameter')
    expect(code('sk-0123456789abcdef')).toBeUndefined() // a key's shape
    expect(code('InvalidParameter:sk-1@acct')).toBeUndefined()
    expect(code('bad code')).toBeUndefined()
    expect(code('A'.repeat(65))).toBeUndefined()
    expect(code('abcdef0123', ['abcdef0123'])).toBeUndefined() // a key without dashes, echoed
    expect(code('Key_abcdef0123_bad', ['abcdef0123'])).toBeUndefined()
    expect(code('abcdef', ['xxabcdefxx'])).toBeUndefined() // part of a key
    const key = 'sk-0123456789abcdef0123456789abcdef'
    expect(code('InvalidApiKey.0123456789abcdef0123456789abcdef', [key])).toBeUndefined() // the key without its sk- prefix
    expect(code('key_89abcdef01', [key])).toBeUndefined() // a piece of it
    expect(code('limit_requests', ['eu'])).toBe('limit_requests') // a short account label is no secret
    // The kind is still read from the whole code.
    expect(
      classifyRefusal({
        status: 429,
        body: JSON.stringify({ code: 'Throttling.RateQuota' }),
        secrets: ['throttling.ratequota'],
      }).kind,
    ).toBe('requests')
  })

  it('keeps the code but never invents a message', () => {
    const r = classifyRefusal({
      status: 429,
      body: compat('limit_requests', 'You exceeded your current requests list.'),
    })
    expect(r.code).toBe('limit_requests')
    expect(r.message).toContain('requests list')
  })
})

describe('backoffDelay', () => {
  it('full jitter, doubling and capped', () => {
    expect(backoffDelay(1, undefined, () => 1)).toBe(250)
    expect(backoffDelay(3, undefined, () => 1)).toBe(1000)
    expect(backoffDelay(20, undefined, () => 1)).toBe(8000)
    expect(backoffDelay(3, undefined, () => 0)).toBe(0)
  })
  it('a hint is a floor, with a little jitter on top', () => {
    expect(backoffDelay(1, 2000, () => 0)).toBe(2000)
    expect(backoffDelay(1, 2000, () => 1)).toBe(2200)
    expect(backoffDelay(1, 60_000, () => 1)).toBe(61_000)
  })
  it('a hint shorter than half the backoff ceiling does not shorten it (an upstream Retry-After of 1 ms)', () => {
    expect(backoffDelay(1, 1, () => 0)).toBe(125)
    expect(backoffDelay(3, 1, () => 0)).toBe(500)
    expect(backoffDelay(20, 1, () => 0)).toBe(4000)
    expect(backoffDelay(3, 0.001, () => 1)).toBe(550)
  })
})
