export { UpstreamPool, type UpstreamPoolDeps } from './pool.js'
export { classifyRefusal, parseResetAt, type RefusalInput } from './classify.js'
export { backoffDelay } from './backoff.js'
export type { AcquireRequest, RefusalKind, RefusalReach, UpstreamRefusal, UpstreamSlot, UpstreamState } from './types.js'
