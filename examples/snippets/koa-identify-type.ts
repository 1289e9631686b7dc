// packages/koa/README.md, "identify": the signature shown is the adapter's own.
import type { Context } from 'koa'
import type { IdentityInput } from '@qwen-guard/core'
import type { KoaAdapterOptions } from '@qwen-guard/koa'

interface Shown {
  // #region readme
  identify?: (ctx: Context) => IdentityInput | Promise<IdentityInput> // { user?: string | null; key?: string | null }
  // #endregion readme
}

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
export const sameAsTheAdapter: Same<Shown['identify'], KoaAdapterOptions['identify']> = true
