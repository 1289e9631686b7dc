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
 * that `{}` for the body answered a valid request 400 ("You must provide a model parameter"). Only
 * `{}` is such a leftover: any other object or array on a request nobody read was set by the app on
 * purpose (a gateway or preset route that builds the chat request itself), and is the body; bytes or
 * text set so are the request's own, read from it with the charset and encoding checks.
 *
 * `raw` (Express `req.rawBody`, Koa `ctx.request.rawBody`: bytes or decoded text) is the body when a
 * middleware read the request, kept what it read there and made no parsed body (a `verify` hook, a
 * raw-body reader of its own), or only an earlier parser's unread `{}`: what is left of the stream is
 * not the body. With neither, the relay answers such a request 500 and tells `onError`: reading it
 * answered a valid request 400 "not valid JSON".
 */
export function relayBodyOf(parsed: unknown, req: Readable, raw?: unknown): RelayBody {
  if (!(req.readableDidRead || req.readableEnded)) return isSetObject(parsed) ? parsed : req
  const kept = typeof raw === 'string' || raw instanceof Uint8Array ? raw : undefined
  // The `{}` a parser leaves on a request it did not read, beside what a reader after it kept: the
  // kept bytes are the body (a parser that made `{}` of a `{}` body kept `{}`, the same body).
  const leftover = kept !== undefined && kept.length > 0 && isEmptyPlainObject(parsed)
  if (parsed !== undefined && !leftover) return parsed as RelayBody
  return kept ?? req
}

/**
 * A body a framework's parser already made: a plain object (or one without a prototype), or an array
 * (refused later by validation as not an object); not a class instance (bytes, a stream).
 */
export function isParsedBody(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value) as unknown
  return proto === Object.prototype || proto === null || Array.isArray(value)
}

/** An object or array other than `{}`, which no parser leaves on a request it did not read. */
function isSetObject(value: unknown): value is Record<string, unknown> {
  return isParsedBody(value) && (Array.isArray(value) || Object.keys(value).length > 0)
}

function isEmptyPlainObject(value: unknown): boolean {
  return isParsedBody(value) && !Array.isArray(value) && Object.keys(value).length === 0
}
