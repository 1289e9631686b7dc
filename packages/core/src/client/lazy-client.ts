/**
 * `req.qwen` / `ctx.qwen` and `qwenIdentity`, for every adapter: lazy, so a route that never calls
 * Qwen pays for neither the identity nor the client, and is not failed by an app `identify` that
 * threw (reading either property throws that error, where Qwen is used). The accessors are module-level functions
 * installed once on a framework's shared prototype (Express's `request`, Koa's `app.context`); each
 * request object only gets one data property. Accessors defined per request would give every
 * request its own hidden class and turn the framework's property accesses megamorphic (measured:
 * -40 % req/s on a route that never calls Qwen).
 */
import type OpenAI from 'openai'
import type { Guard } from '../guard-types.js'
import { identityOrDefault } from '../identity.js'
import type { Identity } from '../types.js'

const ATTACHED = Symbol('qwen-guard.attached')

/** What one request holds: the guard, and the identity and client once somebody asked for them. */
interface Attachment {
  guard: Guard
  /** The framework's request object the identity is read from (`req`, or `ctx`). */
  subject: object
  /** The default identity (the client address), for a request whose identity names no user. */
  identify: (subject: never) => Identity
  /** The identity in use, always checked (`identityOrDefault`). */
  who: Identity | undefined
  /** The app's `identify` failed: reading `qwenIdentity` or `qwen` throws this, until one is assigned. */
  failure: { error: unknown } | undefined
  /** Asks the app's `identify` again at the first read (AttachOptions.recheck). */
  recheck: (() => Identity | Promise<Identity>) | undefined
  client: OpenAI | undefined
  /** Makes the request's "client went away" signal (AttachOptions.clientGone); made once, when a client first is. */
  clientGone: (() => AbortSignal) | undefined
  /** That signal, shared by every client of the request (a later `qwenIdentity` makes a new client). */
  goneSignal: AbortSignal | undefined
}

type Holder = { [ATTACHED]?: Attachment }

function defaultOf(attachment: Attachment): () => Identity {
  return () => (attachment.identify as (subject: object) => Identity)(attachment.subject)
}

function identityOf(attachment: Attachment): Identity {
  if (attachment.recheck) recheckIdentity(attachment)
  if (attachment.failure) throw attachment.failure.error
  return (attachment.who ??= identityOrDefault(undefined, defaultOf(attachment)))
}

/**
 * The app's `identify` asked once more, where the identity is first read: its answer, when it gives
 * one synchronously, replaces what the middleware found (which named no user, or was a failure).
 * A throw now keeps the middleware's outcome.
 */
function recheckIdentity(attachment: Attachment): void {
  const again = attachment.recheck as () => Identity | Promise<Identity>
  attachment.recheck = undefined
  let identity: Identity | Promise<Identity>
  try {
    identity = again()
  } catch {
    return
  }
  if (typeof (identity as Promise<Identity>).then === 'function') return
  attachment.who = identity as Identity // checked by the adopted identify, as the middleware's was
  attachment.failure = undefined
}

function getIdentity(this: Holder): Identity | undefined {
  const attachment = this[ATTACHED]
  return attachment && identityOf(attachment)
}

function setIdentity(this: Holder, value: Identity): void {
  const attachment = this[ATTACHED]
  if (!attachment)
    return void Object.defineProperty(this, 'qwenIdentity', {
      value,
      writable: true,
      configurable: true,
      enumerable: true,
    })
  // The same rule as the adapters' `identify`: no user means the client address; a bad part throws here.
  attachment.who = identityOrDefault(value, defaultOf(attachment), 'qwenIdentity')
  attachment.failure = undefined
  attachment.recheck = undefined
  attachment.client = undefined
}

function getClient(this: Holder): OpenAI | undefined {
  const attachment = this[ATTACHED]
  if (!attachment) return undefined
  if (attachment.client) return attachment.client
  const identity = identityOf(attachment)
  const clientGone = (attachment.goneSignal ??= attachment.clientGone?.())
  return (attachment.client = attachment.guard.client(identity, clientGone ? { clientGone } : undefined))
}

function setClient(this: Holder, value: OpenAI): void {
  const attachment = this[ATTACHED]
  if (!attachment)
    return void Object.defineProperty(this, 'qwen', { value, writable: true, configurable: true, enumerable: true })
  attachment.client = value
}

const ACCESSORS = {
  qwenIdentity: { configurable: true, get: getIdentity, set: setIdentity },
  qwen: { configurable: true, get: getClient, set: setClient },
} satisfies PropertyDescriptorMap

const installed = new WeakSet<object>()

export interface AttachOptions<Subject extends object> {
  guard: Guard
  /** The request object `identify` reads. */
  subject: Subject
  /** The default identity of a request (the client address): used when `identity` names no user. */
  identify: (subject: Subject) => Identity
  /**
   * An identity already known (the app's `identify`, which the adapter called). Checked here with
   * `identityOrDefault`: a missing or blank user becomes the default's; a non-string part throws.
   */
  identity?: Identity
  /**
   * The app's `identify` threw or rejected (or returned a part `identityOrDefault` refuses): nothing is
   * charged, and reading `qwenIdentity` or `qwen` throws `error` (the relay answers it with its
   * generic 500; a route gets it in its framework's error handling).
   */
  failure?: { error: unknown }
  /**
   * The app's `identify` again, when the middleware's answer was provisional (it threw, or named no
   * user): asked once more where the identity is first read, and its synchronous answer used.
   */
  recheck?: () => Identity | Promise<Identity>
  /**
   * The request's "client went away" signal (`clientGoneSignal(res)`), asked for when `qwen` is first
   * read: its calls follow it as `CallOptions.clientGone` (queueing and streams end when the client
   * leaves; a JSON call already sent runs to its usage).
   */
  clientGone?: () => AbortSignal
}

/**
 * Gives each holder (the request, and e.g. Koa's `ctx.state`) lazy `qwen` and `qwenIdentity` that
 * share one attachment. `shared` is the prototype to install the accessors on once; a holder that
 * does not inherit from it gets accessors of its own (slower but correct). Both properties stay
 * assignable, so a later middleware may override them.
 */
export function attachLazyClient<Subject extends object>(
  holders: ReadonlyArray<{ holder: object; shared?: object | undefined; only?: 'qwen' }>,
  options: AttachOptions<Subject>,
): void {
  const attachment: Attachment = {
    guard: options.guard,
    subject: options.subject,
    identify: options.identify,
    who: undefined,
    client: undefined,
    clientGone: options.clientGone,
    goneSignal: undefined,
    failure: options.failure && { error: asError(options.failure.error) },
    recheck: options.recheck,
  }
  if (options.identity !== undefined && !options.failure) {
    try {
      attachment.who = identityOrDefault(options.identity, defaultOf(attachment))
    } catch (error) {
      attachment.failure = { error }
    }
  }
  for (const { holder, shared, only } of holders) {
    ;(holder as Holder)[ATTACHED] = attachment
    const accessors = only ? { qwen: ACCESSORS.qwen } : ACCESSORS
    if (!shared) Object.defineProperties(holder, accessors)
    else if (!installed.has(shared)) {
      Object.defineProperties(shared, accessors)
      installed.add(shared)
    }
  }
}

/**
 * What a failed `identify` threw, as an Error: Express takes `next(undefined)` (and `next('route')`)
 * for "go on", Koa answers nothing for a null error, so a value that is no Error is wrapped (the
 * value kept as its `cause`).
 */
function asError(thrown: unknown): unknown {
  return thrown instanceof Error ? thrown : new Error('identify() failed without an Error', { cause: thrown })
}

/** Whether `attachLazyClient` ran on this holder (the relay then reuses its identity). */
export function isLazyClientAttached(holder: object): boolean {
  return (holder as Holder)[ATTACHED] !== undefined
}
