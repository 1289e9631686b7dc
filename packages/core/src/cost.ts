import { estimateToolsTokens } from './estimate.js'
import type { ChatMessageLike, ModelPrice, ResolvedModel, ResolvedOptions } from './types.js'
import { assertFitsContext } from './validate.js'

/** What a chat request may cost, worked out before it is sent. */
export interface CallPlan {
  model: ResolvedModel
  promptTokens: number
  /** The completion budget: the request's max_tokens, or the configured default capped by the model. */
  maxTokens: number
  /** Tokens reserved from every limit: prompt estimate + completion budget. */
  reservedTokens: number
  /** Spend reserved, in US dollars (0 when the model has no price). */
  reservedUsd: number
}

interface PlannedRequest {
  model: string
  messages: ReadonlyArray<ChatMessageLike>
  max_tokens?: number | null
  max_completion_tokens?: number | null
  tools?: unknown
}

/**
 * Plans a request whose model is known to the table (validation has run). Throws a 400
 * context_length_exceeded when prompt + completion budget cannot fit the model's context.
 */
export function planCall(request: PlannedRequest, options: ResolvedOptions): CallPlan {
  const model = options.models[request.model]
  if (!model) throw new Error(`planCall: model "${request.model}" is not in the table`)
  const promptTokens = options.estimator.countPromptTokens(request.messages) + estimateToolsTokens(request.tools)
  const maxTokens =
    request.max_completion_tokens ?? request.max_tokens ?? Math.min(options.defaultMaxTokens, model.maxOutputTokens)
  assertFitsContext(model, promptTokens, maxTokens)
  return {
    model,
    promptTokens,
    maxTokens,
    reservedTokens: promptTokens + maxTokens,
    reservedUsd: priceOf(model.price, promptTokens, maxTokens),
  }
}

/** Spend of a call in US dollars. */
export function priceOf(price: ModelPrice | undefined, inputTokens: number, outputTokens: number): number {
  if (!price) return 0
  return (inputTokens * price.inputPerMillion + outputTokens * price.outputPerMillion) / 1_000_000
}
