/**
 * The reservation rule: what one chat request can be billed, worked out before it is sent. Every
 * field that lets Qwen's output exceed the reservation or adds billed tokens is either in the
 * reservation or refused here with a 400 naming it (docs/quotas.md, "The reservation rule").
 * Shared by the guarded call, `guard.check()` and validation (which runs the field rules early),
 * and home of the one "can this reservation ever fit this model" rule.
 */
import { unawaited } from './app-hook.js'
import { echo } from './echo.js'
import { contextTooLong, invalidRequest, modelNotFound } from './errors.js'
import { estimatePromptTokens, estimateRequestExtrasTokens } from './estimate.js'
import { DEFAULT_MAX_REASONING_TOKENS, DEFAULT_THINKING } from './models.js'
import type { ChatMessageLike, ModelPrice, ResolvedModel, ResolvedOptions } from './types.js'

/** What a chat request may cost, worked out before it is sent. */
export interface CallPlan {
  model: ResolvedModel
  /**
   * Input tokens: the messages (options.estimator), plus tool and function definitions, tool_choice,
   * response_format, prediction, high-resolution images, and the search allowance.
   */
  promptTokens: number
  /** Output tokens reserved: `answerTokens + reasoningTokens`. */
  maxTokens: number
  /** The answer's cap: the larger of max_tokens and max_completion_tokens, or options.defaultMaxTokens (capped by the model). */
  answerTokens: number
  /** The reasoning's cap: 0 without thinking, else thinking_budget or options.defaultThinkingBudget (capped by the model). */
  reasoningTokens: number
  /** Tokens reserved from every limit: promptTokens + maxTokens. */
  reservedTokens: number
  /** Spend reserved, in US dollars: the reserved tokens at the dearest price of the model and its fallbacks (0 without prices). */
  reservedUsd: number
  /**
   * Fields the guard adds to the body it sends upstream so that Qwen's own caps are the reserved
   * ones: `max_tokens` when the request set no cap, `thinking_budget` when it reasons without one.
   * Empty when the request set them itself.
   */
  upstreamFields: Readonly<{ max_tokens?: number; thinking_budget?: number }>
}

/**
 * A request to plan: a validated body, or a `guard.check()` request. Besides these, the rule reads
 * n, enable_thinking, thinking_budget, enable_search, enable_code_interpreter, modalities, audio,
 * tools, functions, tool_choice, response_format, prediction and vl_high_resolution_images when present.
 */
export interface PlannedRequest {
  model: string
  messages: ReadonlyArray<ChatMessageLike>
  max_tokens?: number | null
  max_completion_tokens?: number | null
}

type Fields = Readonly<Record<string, unknown>>

/** The output side of the rule, before any estimate (validation runs it for its 400s). */
export interface OutputPlan {
  answerTokens: number
  reasoningTokens: number
  /** Tokens the request adds to the input besides its messages and definitions (the search allowance). */
  searchTokens: number
  upstreamFields: CallPlan['upstreamFields']
}

function invalid(message: string, param: string): never {
  throw invalidRequest(message, param)
}

const isAbsent = (value: unknown): value is null | undefined => value === undefined || value === null

function positiveIntUpTo(request: Fields, field: string, max: number, what: string): number | undefined {
  const value = request[field]
  if (isAbsent(value)) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
    invalid(`${field} must be a positive integer, got ${echo(value)}.`, field)
  if (value > max) invalid(`${field} is too large: ${value}. ${what} at most ${max}.`, field)
  return value
}

function optionalBoolean(request: Fields, field: string): boolean | undefined {
  const value = request[field]
  if (isAbsent(value)) return undefined
  if (typeof value !== 'boolean') invalid(`${field} must be a boolean, got ${echo(value)}.`, field)
  return value
}

/** Whether the model will reason, from its `thinking` mode and the request's `enable_thinking`. */
function thinks(model: ResolvedModel, enable: boolean | undefined): boolean {
  switch (model.thinking ?? DEFAULT_THINKING) {
    case 'always':
      return true
    case 'on':
      return enable !== false
    case 'unsupported':
      return false
    default:
      return enable === true
  }
}

/** The requested model and the fallbacks the pool may serve the call with instead: the plan must cover each. */
function servingModels(model: ResolvedModel, options: ResolvedOptions): ResolvedModel[] {
  const models = [model]
  for (const name of model.fallback)
    if (Object.hasOwn(options.models, name)) models.push(options.models[name] as ResolvedModel)
  return models
}

/**
 * The output side of the reservation rule, and the refusals of fields it cannot bound. Throws
 * QwenGuardError 400 `invalid_request` naming the field:
 * - max_tokens, max_completion_tokens: positive integers up to the model's maxOutputTokens. Both
 *   may be set: Qwen documents neither as the winner, so the larger is reserved (and both are sent
 *   as given, so whichever Qwen obeys is within the reservation). max_completion_tokens alone is
 *   sent upstream as max_tokens too. Neither: options.defaultMaxTokens (capped by the model), sent
 *   upstream as max_tokens.
 * - enable_thinking, thinking_budget: reasoning is billed as output and not capped by max_tokens,
 *   so a call that reasons (on the requested model or a fallback of it) reserves its thinking_budget
 *   (a positive integer up to the model's maxReasoningTokens) or options.defaultThinkingBudget
 *   (capped by every model that may reason), sent upstream as thinking_budget.
 * - n: several choices multiply the output; only n = 1 is accepted.
 * - enable_search: adds retrieved text to the input: options.searchAllowanceTokens is reserved,
 *   or the request refused when that option is false.
 * - enable_code_interpreter: true, modalities other than ["text"], audio: output (tool runs, audio)
 *   no field bounds, refused.
 */
export function planOutput(planned: PlannedRequest, model: ResolvedModel, options: ResolvedOptions): OutputPlan {
  const request = planned as unknown as Fields
  const upstreamFields: { max_tokens?: number; thinking_budget?: number } = {}
  const serving = servingModels(model, options)
  const outputCap = `The model ${model.name} accepts`
  const maxTokens = positiveIntUpTo(request, 'max_tokens', model.maxOutputTokens, outputCap)
  const maxCompletion = positiveIntUpTo(request, 'max_completion_tokens', model.maxOutputTokens, outputCap)
  let answerTokens = Math.max(maxTokens ?? 0, maxCompletion ?? 0)
  if (answerTokens === 0) {
    // Sent upstream, so within every serving model's cap.
    answerTokens = Math.min(options.defaultMaxTokens, ...serving.map((m) => m.maxOutputTokens))
    upstreamFields.max_tokens = answerTokens
  } else if (maxTokens === undefined) {
    // max_completion_tokens alone: Qwen documents max_tokens as its bound (QWEN-FACTS.md section 7),
    // so it goes too, at the reserved cap, whichever of the two Qwen obeys.
    upstreamFields.max_tokens = answerTokens
  }

  const { n } = request
  if (!isAbsent(n) && n !== 1)
    invalid(`n must be 1; several choices per request are not supported, got ${echo(n)}.`, 'n')

  const enable = optionalBoolean(request, 'enable_thinking')
  const maxReasoning = (m: ResolvedModel) => m.maxReasoningTokens ?? DEFAULT_MAX_REASONING_TOKENS
  const budget = positiveIntUpTo(request, 'thinking_budget', maxReasoning(model), `The model ${model.name} reasons for`)
  if (enable === true && model.thinking === 'unsupported') {
    invalid(`The model ${model.name} has no thinking mode; enable_thinking must not be true.`, 'enable_thinking')
  }
  // Reasoning is reserved when the requested model or a fallback may reason; the default budget
  // sent upstream then bounds every one of them.
  const thinkers = serving.filter((m) => thinks(m, enable))
  let reasoningTokens = 0
  if (thinkers.length > 0) {
    reasoningTokens = budget ?? Math.min(options.defaultThinkingBudget, ...thinkers.map(maxReasoning))
    if (budget === undefined) upstreamFields.thinking_budget = reasoningTokens
  }

  let searchTokens = 0
  if (optionalBoolean(request, 'enable_search') === true) {
    if (options.searchAllowanceTokens === false)
      invalid('Web search is not available through this server; enable_search must not be true.', 'enable_search')
    searchTokens = options.searchAllowanceTokens
  }

  // High-resolution images cost more input (estimate.ts); a value Qwen might read as true is refused.
  optionalBoolean(request, 'vl_high_resolution_images')
  if (optionalBoolean(request, 'enable_code_interpreter') === true) {
    invalid(
      'enable_code_interpreter is not supported: the tokens its runs add cannot be reserved in advance.',
      'enable_code_interpreter',
    )
  }
  const { modalities, audio } = request
  if (!isAbsent(modalities) && !(Array.isArray(modalities) && modalities.length === 1 && modalities[0] === 'text')) {
    invalid(`Only text output is supported; modalities must be ["text"], got ${echo(modalities)}.`, 'modalities')
  }
  if (!isAbsent(audio)) invalid('Audio output is not supported.', 'audio')

  return { answerTokens, reasoningTokens, searchTokens, upstreamFields }
}

/** A finite, non-negative whole number of tokens from an estimator (an app's own may return anything). */
function tokenCount(value: number, fallback: () => number): number {
  if (Number.isFinite(value) && value >= 0) return Math.ceil(value)
  // A promise (an estimator that is async without saying so) is no count either; its rejection is
  // handled here, or it would end the process as an unhandled rejection.
  unawaited(value)
  return fallback()
}

/**
 * Plans a request (validated, or as given to guard.check() / guard.call()). Throws QwenGuardError:
 * 404 `model_not_found` for a model not in the table, 400 for messages that are not an array or a
 * field the rule refuses (planOutput), 400 `context_length_exceeded` when the reservation can never
 * fit the model (assertFits).
 */
export function planCall(request: PlannedRequest, options: ResolvedOptions): CallPlan {
  // guard.check() and guard.call() take bodies validation may not have seen: the fields the plan reads first.
  const model =
    typeof request.model === 'string' && Object.hasOwn(options.models, request.model)
      ? options.models[request.model]
      : undefined
  if (!model) {
    throw modelNotFound(`The model ${echo(request.model)} does not exist.`)
  }
  if (!Array.isArray(request.messages)) invalid('messages must be an array.', 'messages')
  const output = planOutput(request, model, options)
  const messages = tokenCount(options.estimator.countPromptTokens(request.messages), () =>
    estimatePromptTokens(request.messages),
  )
  const promptTokens = messages + estimateRequestExtrasTokens(request as unknown as Fields) + output.searchTokens
  const maxTokens = output.answerTokens + output.reasoningTokens
  const plan: CallPlan = {
    model,
    promptTokens,
    maxTokens,
    answerTokens: output.answerTokens,
    reasoningTokens: output.reasoningTokens,
    reservedTokens: promptTokens + maxTokens,
    // Priced like the tokens: at the dearest model that may serve the call (a fallback may cost more).
    reservedUsd: Math.max(...servingModels(model, options).map((m) => priceOf(m.price, promptTokens, maxTokens))),
    upstreamFields: output.upstreamFields,
  }
  assertFits(plan)
  return plan
}

/**
 * The largest reservation a model (one account's lane of it) can ever admit: its context window,
 * and a whole second's and minute's tokens. The one "can this ever fit" rule of the upstream side.
 */
export function largestReservation(model: ResolvedModel): number {
  return Math.min(model.contextWindow, model.tps, model.tpm)
}

/** Refuses (400 context_length_exceeded, param messages) a plan whose tokens can never fit its model's context window. */
export function assertFits(plan: CallPlan): void {
  const { model, promptTokens, answerTokens, reasoningTokens } = plan
  if (plan.reservedTokens <= model.contextWindow) return
  const reasoning = reasoningTokens > 0 ? ` plus ${reasoningTokens} for reasoning` : ''
  throw contextTooLong(
    `This model's maximum context length is ${model.contextWindow} tokens; the request needs about ${promptTokens} for its input plus ${answerTokens} for the completion${reasoning}.`,
  )
}

/** Spend of a call in US dollars: every token at the price of the tier its input tokens fall in. */
export function priceOf(price: ModelPrice | undefined, inputTokens: number, outputTokens: number): number {
  if (!price) return 0
  let rate: { inputPerMillion: number; outputPerMillion: number } = price
  for (const tier of price.tiers ?? []) if (inputTokens > tier.inputAbove) rate = tier
  return (inputTokens * rate.inputPerMillion + outputTokens * rate.outputPerMillion) / 1_000_000
}
