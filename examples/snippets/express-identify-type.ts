// packages/express/README.md, "identify": the signature shown is the adapter's own.
import type { Request } from 'express'
import type { IdentityInput } from '@qwen-guard/core'
import type { ExpressAdapterOptions } from '@qwen-guard/express'

interface Shown {
  // #region readme
  identify?: (req: Request) => IdentityInput | Promise<IdentityInput> // { user?: string | null; key?: string | null }
  // #endregion readme
}

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
export const sameAsTheAdapter: Same<Shown['identify'], ExpressAdapterOptions['identify']> = true
