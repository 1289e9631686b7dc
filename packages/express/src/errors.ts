import { isQwenGuardError } from '@qwen-guard/core'
import { isClientGone } from '@qwen-guard/core/adapter'
import type { ErrorRequestHandler } from 'express'

/**
 * Error-handling middleware: a QwenGuardError (what `req.qwen` throws on a refusal) becomes its full
 * answer: status, headers (Retry-After, RateLimit...) and OpenAI-shaped body. A call ended because this
 * request's client went away (`ClientGoneError`) ends the request quietly: nobody is left to answer.
 * Any other error goes on to the app's own handlers.
 */
export const qwenGuardErrors: ErrorRequestHandler = function qwenGuardErrors(err, _req, res, next) {
  if (isClientGone(err, res)) return // its socket is closed already
  if (!isQwenGuardError(err) || res.headersSent) {
    next(err)
    return
  }
  const answer = err.toHttp()
  res.status(answer.status).set(answer.headers).json(answer.body)
}
