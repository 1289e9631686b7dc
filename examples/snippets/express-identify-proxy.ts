// packages/express/README.md, "identify" behind a trusted proxy. Compiled only.
import express from 'express'
import { qwenGuard, type ExpressAdapterOptions } from '@qwen-guard/express'
import type { GuardOptions } from '@qwen-guard/core'

declare global {
  namespace Express {
    interface Request {
      user?: { id: string }
    } // set by your own auth middleware (session, JWT, ...)
  }
}
declare const options: GuardOptions & ExpressAdapterOptions
const app = express()

// #region readme
import { clientAddress } from '@qwen-guard/core'
app.set('trust proxy', 'loopback')
qwenGuard({
  ...options,
  identify: (req) => ({ user: req.user?.id ?? clientAddress(req.ip), key: req.get('x-api-key') }),
})
// #endregion readme
