import type { IdentityInput } from '@qwen-guard/core'
import type { Context } from 'koa'

/** Tells whose quota a request's calls are charged to. May be async (a session or API-key lookup). */
export type IdentifyContext = (ctx: Context) => IdentityInput | Promise<IdentityInput>

/** What the Koa adapter adds to the core options (or takes beside an existing guard). */
export interface KoaAdapterOptions {
  /**
   * Whose quota a request uses. Default: `{ user: <client address> }` from the socket (IPv6 grouped
   * by /64), never from a header (not even with `app.proxy`); behind a trusted proxy read its header here.
   *
   * @example
   * identify: (ctx) => ({ user: ctx.state.user?.id ?? clientAddress(ctx.ip), key: ctx.get('x-api-key') || undefined })
   */
  identify?: IdentifyContext
}

/** Options of `guard.proxy()`. */
export interface KoaProxyOptions {
  /** Path the relay answers under; other paths pass to the next middleware. Default: '/v1'. */
  prefix?: string
  /** Largest request body the relay reads, in bytes; larger ones get 413. Default: 1,048,576 (1 MiB). */
  maxBodyBytes?: number
  /**
   * Told about unexpected errors (the client gets a generic 500). Default: one `console.error` line
   * with the error's name, code and first line of its message, no stack, `sk-` keys and Bearer tokens
   * masked (`safeErrorLine`): an error of your own `identify` or `quotas` shows its message there.
   */
  onError?: (error: unknown) => void
}
