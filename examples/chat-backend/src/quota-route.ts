/**
 * GET /api/quota: the demo user's quota right now, straight from `guard.state(identity)`, which
 * counts nothing, plus the user's calls in progress (`live`, see live-calls.ts). The page calls it
 * after every answer and refusal, about twice a second while any of its calls is in progress (so
 * the panel moves while an answer streams: the lease in use, the tokens reserved), and counts the
 * reset times down locally in between.
 */
import type { Request, Response } from 'express'
import type { Guard, QuotaState } from '@qwen-guard/core'
import { CHAT_MODEL, FALLBACK_MODELS } from './demo-settings.js'
import type { LiveCalls, LiveSummary } from './live-calls.js'
import { userLabel } from './session.js'

export interface QuotaBody {
  user: string
  backend: 'simulator' | 'qwen'
  model: { requested: string; fallback: string[] }
  limits: Array<Pick<QuotaState, 'dimension' | 'limit' | 'remaining' | 'resetMs' | 'windowSeconds'>>
  /** This user's page calls in progress right now. */
  live: LiveSummary
}

export function quotaRoute(guard: Guard, backend: QuotaBody['backend'], live: LiveCalls) {
  return async (req: Request, res: Response): Promise<void> => {
    const user = req.demoUser
    if (!user) throw new Error('quotaRoute needs demoSession in front of it')
    const states = await guard.state({ user })
    const body: QuotaBody = {
      user: userLabel(user),
      backend,
      model: { requested: CHAT_MODEL, fallback: FALLBACK_MODELS },
      limits: states
        .filter((state) => state.scope === 'user')
        .map(({ dimension, limit, remaining, resetMs, windowSeconds }) => ({
          dimension,
          limit,
          remaining: Math.max(0, remaining),
          resetMs: Math.max(0, Math.round(resetMs)),
          windowSeconds,
        })),
      live: live.summary(user),
    }
    res.set('cache-control', 'no-store').json(body)
  }
}
