export { createGuard } from './guard.js'
export { QwenGuardError, isQwenGuardError, GUARD_ERROR_STATUS, type GuardErrorCode } from './errors.js'
export { QwenGuardConfigError, resolveOptions, validateQuotaPolicies, DEFAULT_BASE_URL } from './options.js'
export { BUILTIN_MODELS } from './models.js'
export {
  refusalAnswer,
  internalErrorAnswer,
  rateLimitHeaders,
  openAiRateLimitHeaders,
  successHeaders,
} from './http-answer.js'
export { createEstimator, estimateTextTokens, estimateToolsTokens } from './estimate.js'
export { validateChatRequest, MAX_BODY_BYTES, type ChatRequest, type ChatMessage } from './validate.js'
export { defaultIdentify, clientAddress } from './client-address.js'
export { MAX_IDENTITY_LENGTH } from './identity.js'
export { createRelay, type Relay, type RelayRequest, type RelayResponse, type RelayOptions } from './relay.js'
export { createNodeRelay, type NodeRelay, type NodeRelayOptions } from './node-relay.js'
export type * from './guard-types.js'
export type * from './types.js'
export type * from './usage/types.js'
export { safeErrorLine, maskKeys } from './safe-error-line.js'
export type { MetricsHandler, MetricsScrape } from './metrics.js'
