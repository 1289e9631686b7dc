import type { IdentityInput } from '@qwen-guard/core'
import type { Request } from 'express'

/** Tells whose quota a request's calls are charged to. May be async (a session or API-key lookup). */
export type IdentifyRequest = (req: Request) => IdentityInput | Promise<IdentityInput>

/** What the Express adapter adds to the core options (or takes beside an existing guard). */
export interface ExpressAdapterOptions {
  /**
   * Whose quota a request uses. Default: `{ user: <client address> }` from the socket (IPv6 grouped
   * by /64), never from a header; behind a trusted proxy read your proxy's header here.
   *
   * @example
   * identify: (req) => ({ user: req.session?.userId ?? clientAddress(req.ip), key: req.get('x-api-key') })
   */
  identify?: IdentifyRequest
}

/** Options of `guard.proxy()`. */
export interface ExpressProxyOptions {
  /** Largest request body the relay reads, in bytes; larger ones get 413. Default: 1,048,576 (1 MiB). */
  maxBodyBytes?: number
  /**
   * Told about unexpected errors (the client gets a generic 500). Default: one `console.error` line
   * with the error's name, code and first line of its message, no stack, `sk-` keys and Bearer tokens
   * masked (`safeErrorLine`): an error of your own `identify` or `quotas` shows its message there.
   */
  onError?: (error: unknown) => void
}
