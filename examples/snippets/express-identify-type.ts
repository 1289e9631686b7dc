// packages/express/README.md, "identify": the signature shown is the adapter's own.
import type { Request } from 'express'
import type { Identity } from '@qwen-guard/core'
import type { ExpressAdapterOptions } from '@qwen-guard/express'

interface Shown {
  // #region readme
  identify?: (req: Request) => Identity | Promise<Identity> // Identity = { user?: string; key?: string }
  // #endregion readme
}

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
export const sameAsTheAdapter: Same<Shown['identify'], ExpressAdapterOptions['identify']> = true
