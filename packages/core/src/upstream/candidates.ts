/**
 * The models a call may be served by: the requested one, then its `fallback` list in order, each
 * kept only with the lanes (account x model) the request can ever fit: its context window holds
 * prompt + max tokens, and the reservation fits the model's per-second and per-minute token
 * limits. A request that fits nowhere is refused at once (never queued: waiting cannot help).
 */
import { contextTooLong, modelNotFound, requestTooLarge, type QwenGuardError } from '../errors.js'
import type { ResolvedModel } from '../types.js'
import type { Lane } from './lane.js'

export interface Candidate {
  model: string
  lanes: Lane[]
}

export function candidatesFor(
  request: { model: string; reservedTokens: number },
  lanesByModel: ReadonlyMap<string, Lane[]>,
  models: Readonly<Record<string, ResolvedModel>>,
): Candidate[] {
  const fallback = models[request.model]?.fallback ?? lanesByModel.get(request.model)?.[0]?.model.fallback ?? []
  const names = [...new Set([request.model, ...fallback])]
  const all = names.flatMap((name) => lanesByModel.get(name) ?? [])
  if (all.length === 0) throw notServed(request.model)
  const out: Candidate[] = []
  for (const name of names) {
    const lanes = (lanesByModel.get(name) ?? []).filter((lane) => lane.fits(request.reservedTokens))
    if (lanes.length > 0) out.push({ model: name, lanes })
  }
  if (out.length === 0) throw tooLarge(request.reservedTokens, all)
  return out
}

/**
 * `candidatesFor` remembered per model: the lanes never change, so a request that fits every lane
 * of its model and fallbacks (nearly all do) gets the same list, shared and never modified.
 */
export class CandidateCache {
  private readonly byModel = new Map<string, { all: Candidate[]; fitsAll: number }>()

  constructor(
    private readonly lanesByModel: ReadonlyMap<string, Lane[]>,
    private readonly models: Readonly<Record<string, ResolvedModel>>,
  ) {}

  get(request: { model: string; reservedTokens: number }): readonly Candidate[] {
    let entry = this.byModel.get(request.model)
    if (!entry) {
      const all = candidatesFor({ model: request.model, reservedTokens: 0 }, this.lanesByModel, this.models)
      const fitsAll = Math.min(...all.flatMap((c) => c.lanes.map((lane) => lane.largestFit())))
      entry = { all, fitsAll }
      this.byModel.set(request.model, entry)
    }
    if (request.reservedTokens <= entry.fitsAll) return entry.all
    return candidatesFor(request, this.lanesByModel, this.models)
  }
}

function notServed(model: string): QwenGuardError {
  return modelNotFound(`No upstream account serves the model '${model}'.`)
}

function tooLarge(reserved: number, lanes: Lane[]): QwenGuardError {
  const contextFits = lanes.some((lane) => reserved <= lane.model.contextWindow)
  if (!contextFits) {
    const largest = Math.max(...lanes.map((lane) => lane.model.contextWindow))
    return contextTooLong(
      `The prompt plus max_tokens (${reserved} tokens) exceeds the context window (${largest}) of every model that could serve it.`,
    )
  }
  const overMinute = lanes.every((lane) => reserved > lane.model.tpm)
  const largest = Math.max(...lanes.map((lane) => Math.min(lane.model.tps, lane.model.tpm)))
  return requestTooLarge(
    `The request reserves ${reserved} tokens (prompt + max_tokens); the upstream accepts at most ${Math.floor(largest)} per ${overMinute ? 'minute' : 'second'}. Lower max_tokens (a request without it reserves the guard's defaultMaxTokens) or shorten the prompt.`,
    { dimension: overMinute ? 'tpm' : 'tps', param: 'max_tokens' },
  )
}
