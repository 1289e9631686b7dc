// packages/koa/README.md, "identify" behind a trusted proxy. Compiled only.
import { qwenGuard, type KoaAdapterOptions } from '@qwen-guard/koa'
import type { GuardOptions } from '@qwen-guard/core'

declare module 'koa' {
  interface DefaultState {
    user?: { id: string }
  } // set by your own auth middleware
}
declare const options: GuardOptions & KoaAdapterOptions
declare const app: import('koa')

// #region readme
import { clientAddress } from '@qwen-guard/core'
app.proxy = true
qwenGuard({
  ...options,
  identify: (ctx) => ({ user: ctx.state.user?.id ?? clientAddress(ctx.ip), key: ctx.get('x-api-key') }),
})
// #endregion readme
