/**
 * `@qwen-guard/core/adapter`: what a framework adapter (Express, Koa, your own) builds on, kept off
 * the main entry because apps never call it. Adopting a guard or its options, the identity rule, and
 * the lazy `qwen` / `qwenIdentity` request properties, and the relay's mount and answer for Node servers.
 */
export {
  adoptGuard,
  isGuard,
  knownIdentity,
  type AdapterIdentify,
  type AdoptedGuard,
  type KnownIdentity,
} from './adopt-guard.js'
export { attachLazyClient, isLazyClientAttached, type AttachOptions } from './client/lazy-client.js'
export { identityOrDefault, requireIdentity } from './identity.js'
export { clientGoneSignal, connectionGoneSignal, isClientGone } from './client-gone.js'
export { sendRelayResponse } from './send-relay-response.js'
export { relayBodyOf } from './relay-body.js'
export { normalizePrefix, pathUnder } from './relay-prefix.js'
export { checkRelayOptions } from './relay.js'
