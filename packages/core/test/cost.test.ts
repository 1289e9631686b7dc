/**
 * The reservation rule (cost.ts), field by field: every field that lets Qwen's output exceed the
 * reservation or adds billed tokens is in the reservation or refused with a 400 naming it.
 * Each case failed on the code before the rule (noted where the old rule differed).
 */
import { describe, expect, it } from 'vitest'
import { createGuard } from '../src/guard.js'
import { planCall, priceOf, type CallPlan, type PlannedRequest } from '../src/cost.js'
import { QwenGuardError } from '../src/errors.js'
import { estimatePromptTokens, HIGH_RES_IMAGE_PART_TOKENS, IMAGE_PART_TOKENS } from '../src/estimate.js'
import { resolveOptions } from '../src/options.js'
import type { GuardOptions } from '../src/types.js'

const base: GuardOptions = {
  upstream: { apiKey: 'sk-test' },
  models: {
    'qwen-open': { rpm: 600, tpm: 1_000_000, thinking: 'on', maxReasoningTokens: 38_912 },
    'qwen-thinker': { rpm: 600, tpm: 1_000_000, thinking: 'always', maxReasoningTokens: 32_768 },
  },
}
const options = resolveOptions(base)
const messages = [{ role: 'user', content: 'Hi' }]
const prompt = estimatePromptTokens(messages)

function plan(fields: Record<string, unknown>, opts = options): CallPlan {
  return planCall({ model: 'qwen-plus', messages, ...fields } as PlannedRequest, opts)
}

function refusal(fields: Record<string, unknown>, opts = options): QwenGuardError {
  try {
    plan(fields, opts)
  } catch (error) {
    expect(error).toBeInstanceOf(QwenGuardError)
    return error as QwenGuardError
  }
  throw new Error('expected a refusal')
}

describe('the output cap: max_tokens and max_completion_tokens', () => {
  it('reserves the larger of the two when both are set (the old rule took max_completion_tokens: 1)', () => {
    const p = plan({ max_tokens: 2_000, max_completion_tokens: 1 })
    expect(p.answerTokens).toBe(2_000)
    expect(p.reservedTokens).toBe(prompt + 2_000)
    expect(p.upstreamFields).toEqual({})
    expect(plan({ max_tokens: 1, max_completion_tokens: 2_000 }).answerTokens).toBe(2_000)
  })

  it('reserves and sends the default cap when the request sets none (the old rule reserved it but sent nothing)', () => {
    const p = plan({ max_tokens: null })
    expect(p.answerTokens).toBe(1_024)
    expect(p.upstreamFields).toEqual({ max_tokens: 1_024 })
    // Capped by the model: qwen-max answers at most 8,192.
    const big = resolveOptions({ ...base, defaultMaxTokens: 20_000 })
    expect(planCall({ model: 'qwen-max', messages }, big).upstreamFields).toEqual({ max_tokens: 8_192 })
  })

  it.each([
    ['max_tokens', 0],
    ['max_tokens', 1.5],
    ['max_completion_tokens', '10'],
    ['max_completion_tokens', 32_769],
    ['max_tokens', 1e308],
  ])('refuses %s = %s with a 400 naming it', (field, value) => {
    expect(refusal({ [field]: value })).toMatchObject({ status: 400, code: 'invalid_request', param: field })
  })
})

describe('thinking: reasoning is billed as output and not capped by max_tokens', () => {
  it('reserves the default budget, and sends it, when a request turns thinking on without one', () => {
    const p = plan({ enable_thinking: true, max_tokens: 100 })
    expect(p.reasoningTokens).toBe(4_096)
    expect(p.maxTokens).toBe(4_196)
    expect(p.reservedTokens).toBe(prompt + 4_196)
    expect(p.upstreamFields).toEqual({ thinking_budget: 4_096 })
  })

  it("reserves the request's own thinking_budget, up to the model's maxReasoningTokens", () => {
    const p = plan({ enable_thinking: true, thinking_budget: 500, max_tokens: 100 })
    expect(p.reasoningTokens).toBe(500)
    expect(p.upstreamFields).toEqual({})
    expect(refusal({ enable_thinking: true, thinking_budget: 81_921 })).toMatchObject({
      status: 400,
      param: 'thinking_budget',
    })
    expect(refusal({ thinking_budget: -5 })).toMatchObject({ status: 400, param: 'thinking_budget' })
    expect(refusal({ enable_thinking: 'yes' })).toMatchObject({ status: 400, param: 'enable_thinking' })
  })

  it('follows the model: on by default, always, or unsupported', () => {
    expect(planCall({ model: 'qwen-open', messages }, options).reasoningTokens).toBe(4_096)
    expect(
      planCall({ model: 'qwen-open', messages, enable_thinking: false } as PlannedRequest, options).reasoningTokens,
    ).toBe(0)
    expect(
      planCall({ model: 'qwen-thinker', messages, enable_thinking: false } as PlannedRequest, options).reasoningTokens,
    ).toBe(4_096)
    expect(plan({ enable_thinking: false }).reasoningTokens).toBe(0)
    expect(plan({}).reasoningTokens).toBe(0)
    let error: unknown
    try {
      planCall({ model: 'qwen-max', messages, enable_thinking: true } as PlannedRequest, options)
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ status: 400, code: 'invalid_request', param: 'enable_thinking' })
  })

  it('covers a fallback that reasons by default, and caps the default answer by every serving model', () => {
    const opts = resolveOptions({
      ...base,
      models: { ...base.models, 'qwen-plus': { fallback: ['qwen-open', 'qwen-max'] } },
    })
    const p = planCall({ model: 'qwen-plus', messages }, opts)
    expect(p.reasoningTokens).toBe(4_096)
    expect(p.upstreamFields).toEqual({ max_tokens: 1_024, thinking_budget: 4_096 })
    const long = resolveOptions({
      ...base,
      defaultMaxTokens: 20_000,
      models: { ...base.models, 'qwen-plus': { fallback: ['qwen-max'] } },
    })
    expect(planCall({ model: 'qwen-plus', messages }, long).upstreamFields).toEqual({ max_tokens: 8_192 })
  })

  it('caps the default budget by the model', () => {
    const opts = resolveOptions({ ...base, defaultThinkingBudget: 100_000 })
    expect(
      planCall({ model: 'qwen-turbo', messages, enable_thinking: true } as PlannedRequest, opts).reasoningTokens,
    ).toBe(38_912)
  })
})

describe('fields that multiply or add billed tokens', () => {
  it('refuses n other than 1', () => {
    for (const n of [2, 0, '1', 1.5]) expect(refusal({ n })).toMatchObject({ status: 400, param: 'n' })
    expect(plan({ n: 1 }).answerTokens).toBe(1_024)
  })

  it('reserves the search allowance as input, or refuses search when the allowance is false', () => {
    expect(plan({ enable_search: true }).promptTokens).toBe(prompt + 8_192)
    expect(plan({ enable_search: false }).promptTokens).toBe(prompt)
    expect(plan({ enable_search: true }, resolveOptions({ ...base, searchAllowanceTokens: 500 })).promptTokens).toBe(
      prompt + 500,
    )
    expect(refusal({ enable_search: true }, resolveOptions({ ...base, searchAllowanceTokens: false }))).toMatchObject({
      status: 400,
      param: 'enable_search',
    })
    expect(refusal({ enable_search: 1 })).toMatchObject({ status: 400, param: 'enable_search' })
  })

  it('refuses modes whose billed tokens no field bounds', () => {
    expect(refusal({ enable_code_interpreter: true })).toMatchObject({ param: 'enable_code_interpreter' })
    expect(refusal({ modalities: ['text', 'audio'] })).toMatchObject({ param: 'modalities' })
    expect(refusal({ audio: { voice: 'Cherry', format: 'wav' } })).toMatchObject({ param: 'audio' })
    expect(plan({ modalities: ['text'] }).answerTokens).toBe(1_024)
  })

  it('counts tool and function definitions, tool_choice, response_format and prediction as input', () => {
    const schema = {
      type: 'object',
      properties: { city: { type: 'string', description: 'The city to look the weather up for' } },
    }
    const tool = { type: 'function', function: { name: 'weather', description: 'Current weather', parameters: schema } }
    expect(plan({ tools: [tool] }).promptTokens).toBeGreaterThan(prompt + 20)
    expect(plan({ functions: [tool.function] }).promptTokens).toBeGreaterThan(prompt + 20)
    expect(plan({ tool_choice: { type: 'function', function: { name: 'weather' } } }).promptTokens).toBeGreaterThan(
      prompt + 5,
    )
    expect(plan({ tool_choice: 'auto' }).promptTokens).toBe(prompt)
    expect(
      plan({ response_format: { type: 'json_schema', json_schema: { name: 'w', schema } } }).promptTokens,
    ).toBeGreaterThan(prompt + 20)
    expect(
      plan({ prediction: { type: 'content', content: 'a long predicted answer of many words' } }).promptTokens,
    ).toBeGreaterThan(prompt + 5)
  })

  it('counts an image at its largest default size, and high-resolution images at theirs (the old flat cost was 256)', () => {
    const content = [
      { type: 'text', text: 'Compare' },
      { type: 'image_url', image_url: { url: 'https://x/a.png' } },
      { type: 'video', video: ['https://x/1.png', 'https://x/2.png'] },
    ]
    const withImages = [{ role: 'user', content }]
    const text = estimatePromptTokens([{ role: 'user', content: 'Compare' }])
    const p = planCall({ model: 'qwen-plus', messages: withImages }, options)
    expect(p.promptTokens).toBe(text + 3 * IMAGE_PART_TOKENS)
    const high = planCall(
      { model: 'qwen-plus', messages: withImages, vl_high_resolution_images: true } as PlannedRequest,
      options,
    )
    expect(high.promptTokens).toBe(text + 3 * HIGH_RES_IMAGE_PART_TOKENS)
  })
})

describe('what can never fit', () => {
  it('refuses a reservation over the context window, reasoning included', () => {
    const small = resolveOptions({
      ...base,
      models: { tiny: { rpm: 60, tpm: 100_000, contextWindow: 2_000, maxOutputTokens: 1_000, thinking: 'off' } },
    })
    expect(planCall({ model: 'tiny', messages, max_tokens: 1_000 }, small).reservedTokens).toBeLessThanOrEqual(2_000)
    let error: unknown
    try {
      planCall(
        { model: 'tiny', messages, max_tokens: 1_000, enable_thinking: true, thinking_budget: 1_000 } as PlannedRequest,
        small,
      )
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ status: 400, code: 'context_length_exceeded', param: 'messages', retryable: false })
  })

  it('an estimator that returns garbage cannot poison the reservation', () => {
    const opts = resolveOptions({ ...base, estimator: { countPromptTokens: () => Number.NaN } })
    expect(plan({}, opts).promptTokens).toBe(prompt)
    const negative = resolveOptions({ ...base, estimator: { countPromptTokens: () => -50 } })
    expect(plan({}, negative).reservedTokens).toBe(prompt + 1_024)
  })

  // An attack on 27d1e62: an async estimator's count was dropped in silence, and its rejection was
  // unhandled (which ends a Node process by default).
  it('refuses an async estimator at setup; a promise from a plain function is no count, its rejection handled', async () => {
    expect(() =>
      resolveOptions({ ...base, estimator: { countPromptTokens: (async () => 5_000_000) as unknown as () => number } }),
    ).toThrow(
      'estimator.countPromptTokens: must return a number synchronously (the reservation is made before the call waits), got an async function',
    )
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const rejecting = resolveOptions({
        ...base,
        estimator: { countPromptTokens: () => Promise.reject(new Error('tokenizer down')) as unknown as number },
      })
      expect(plan({}, rejecting).promptTokens).toBe(prompt)
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
    // A tokenizer's class instance is an estimator (option objects are otherwise plain).
    class Tokenizer {
      countPromptTokens(): number {
        return 42
      }
    }
    expect(plan({}, resolveOptions({ ...base, estimator: new Tokenizer() })).promptTokens).toBe(42)
  })
})

describe('a request validation may not have seen (guard.check, guard.call)', () => {
  it('answers a model outside the table and messages that are not an array with guard errors', () => {
    expect(() => planCall({ model: 'gpt-4o', messages }, options)).toThrow(
      expect.objectContaining({ status: 404, code: 'model_not_found', param: 'model' }),
    )
    expect(() => planCall({ model: 'constructor', messages }, options)).toThrow(
      expect.objectContaining({ status: 404 }),
    )
    expect(() => planCall({ model: 'qwen-plus', messages: 'hi' as never }, options)).toThrow(
      expect.objectContaining({ status: 400, param: 'messages' }),
    )
  })
})

describe('guard.check() uses the same rule', () => {
  it('refuses at once what a call with both caps could be billed beyond the quota (tpm 500)', async () => {
    const guard = createGuard({ ...base, quotas: { user: { tpm: 500 } } })
    try {
      const request = { model: 'qwen-plus', messages, max_tokens: 2_000, max_completion_tokens: 1 }
      const result = await guard.check({ user: 'u' }, request)
      expect(result.allowed).toBe(false)
      expect(result.retryAfterMs).toBe(0) // never: the reservation is larger than the whole window
      const thinking = await guard.check(
        { user: 'u' },
        { model: 'qwen-plus', messages, max_tokens: 10, enable_thinking: true },
      )
      expect(thinking.allowed).toBe(false)
      expect((await guard.check({ user: 'u' }, { model: 'qwen-plus', messages, max_tokens: 10 })).allowed).toBe(true)
    } finally {
      await guard.close()
    }
  })
})

describe('the reservation options', () => {
  it('are checked at start-up, naming the option', () => {
    expect(() => resolveOptions({ ...base, defaultThinkingBudget: 0 })).toThrow(/defaultThinkingBudget/)
    expect(() => resolveOptions({ ...base, searchAllowanceTokens: -1 })).toThrow(/searchAllowanceTokens/)
    expect(() => resolveOptions({ ...base, searchAllowanceTokens: true as never })).toThrow(/searchAllowanceTokens/)
    expect(() => resolveOptions({ ...base, models: { 'qwen-plus': { thinking: 'maybe' as never } } })).toThrow(
      /models\.qwen-plus\.thinking/,
    )
    expect(() => resolveOptions({ ...base, models: { 'qwen-plus': { maxReasoningTokens: 1.5 } } })).toThrow(
      /maxReasoningTokens/,
    )
  })

  it('fill the defaults, and a model override keeps the built-in fields it does not name', () => {
    const resolved = resolveOptions({ ...base, models: { 'qwen-plus': { thinking: 'on' } } })
    expect(resolved.defaultThinkingBudget).toBe(4_096)
    expect(resolved.searchAllowanceTokens).toBe(8_192)
    expect(resolved.models['qwen-plus']).toMatchObject({ thinking: 'on', maxReasoningTokens: 81_920 })
    expect(resolved.models['qwen-max']).toMatchObject({ thinking: 'unsupported' })
    expect(resolveOptions({ ...base, searchAllowanceTokens: false }).searchAllowanceTokens).toBe(false)
  })
})

describe('priceOf: a call priced at the tier its input falls in', () => {
  const price = {
    inputPerMillion: 1.2,
    outputPerMillion: 6,
    tiers: [
      { inputAbove: 32_000, inputPerMillion: 2.4, outputPerMillion: 12 },
      { inputAbove: 128_000, inputPerMillion: 3, outputPerMillion: 15 },
    ],
  }
  it.each([
    [32_000, 1_000, 32_000 * 1.2 + 1_000 * 6],
    [32_001, 1_000, 32_001 * 2.4 + 1_000 * 12],
    [128_000, 0, 128_000 * 2.4],
    [200_000, 1_000, 200_000 * 3 + 1_000 * 15],
  ])('%i input + %i output tokens', (input, output, micro) => {
    expect(priceOf(price, input, output)).toBeCloseTo(micro / 1_000_000, 12)
  })

  it('reserves a long prompt at its tier, and a guard checks usdPerDay against it', () => {
    const options = resolveOptions({
      upstream: { apiKey: 'sk-x' },
      models: { 'qwen-plus': { price, contextWindow: 262_144, tpm: 10_000_000, tps: 1_000_000 } },
    })
    const long = planCall(
      { model: 'qwen-plus', messages: [{ role: 'user', content: 'word '.repeat(40_000) }], max_tokens: 100 },
      options,
    )
    expect(long.promptTokens).toBeGreaterThan(32_000)
    expect(long.reservedUsd).toBeCloseTo((long.promptTokens * 2.4 + 100 * 12) / 1_000_000, 12)
  })
})
