/**
 * One anonymous demo user per browser, carried by an httpOnly cookie holding a random id.
 *
 * Why an anonymous cookie is a fair identity for this demo: it is the app's own session, minted
 * here, never an identity claimed for the upstream account, and it only decides which demo quota a
 * browser spends. A visitor who clears it merely gets a fresh demo quota, the same as opening a
 * private window, which the page invites anyway ("a second profile is a second user"). A real app
 * should identify its logged-in user instead (see README).
 */
import { randomBytes } from 'node:crypto'
import type { NextFunction, Request, Response } from 'express'

// Augments the global Express.Request, which Express's own Request extends (as @qwen-guard/express does).
declare global {
  namespace Express {
    interface Request {
      /** The demo user of this browser, set by `demoSession`. */
      demoUser?: string
    }
  }
}

export const COOKIE_NAME = 'qg_demo_user'
/** 16 random bytes in base64url. Anything else is treated as absent, so a hand-made cookie cannot pick odd limiter keys. */
const ID_PATTERN = /^[A-Za-z0-9_-]{22}$/
const MAX_AGE_SECONDS = 30 * 24 * 3600

/** The valid demo-user id in the request's cookie, if any. */
export function readDemoUser(req: Request): string | undefined {
  const header = req.headers.cookie
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq === -1) continue
    if (part.slice(0, eq).trim() !== COOKIE_NAME) continue
    const value = part.slice(eq + 1).trim()
    return ID_PATTERN.test(value) ? value : undefined
  }
  return undefined
}

/** Middleware: makes sure the browser has a demo user, minting one on first visit. */
export function demoSession(req: Request, res: Response, next: NextFunction): void {
  let id = readDemoUser(req)
  if (!id) {
    id = randomBytes(16).toString('base64url')
    res.cookie(COOKIE_NAME, id, {
      httpOnly: true, // page scripts never need it, so XSS cannot lift it
      sameSite: 'lax',
      path: '/',
      maxAge: MAX_AGE_SECONDS * 1000,
      secure: req.secure,
    })
  }
  req.demoUser = id
  next()
}

/** A short, friendly label for the page ("user 3fQk9a"); the full id never leaves the cookie. */
export function userLabel(id: string): string {
  return id.slice(0, 6)
}
