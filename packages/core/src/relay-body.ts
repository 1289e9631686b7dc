/**
 * Which body the relay reads in a Node server: the request stream, or what a body parser mounted
 * before it made of it. Written once for both adapters.
 */
import type { Readable } from 'node:stream'
import type { RelayBody } from './relay.js'

/**
 * The body to hand the relay: `parsed` (Express `req.body`, Koa `ctx.request.body`) when a parser
 * read the request to make it, otherwise the request itself. A parser that did not read the body
 * can still leave a value: @koa/bodyparser and koa-bodyparser set `{}` for a type they do not parse
 * (no Content-Type, `application/x-chat+json`), body-parser 1.x sets `{}` on every request. Taking
 * that `{}` for the body answered a valid request 400 ("You must provide a model parameter").
 */
export function relayBodyOf(parsed: unknown, req: Readable): RelayBody {
  if (parsed === undefined || !(req.readableDidRead || req.readableEnded)) return req
  return parsed as RelayBody
}
