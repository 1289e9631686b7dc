import OpenAI from 'openai'
import type { Simulator } from '../src/index.js'

export const USER = [{ role: 'user' as const, content: 'hi' }]
/** Prompt tokens of USER under the counting rule: "hi" (1) + 5 per message + 3. */
export const USER_PROMPT_TOKENS = 9

export function client(sim: Simulator, apiKey = 'sk-sim'): OpenAI {
  return new OpenAI({ baseURL: sim.url, apiKey, maxRetries: 0 })
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await promise
  } catch (err) {
    return err as InstanceType<typeof OpenAI.APIError>
  }
  throw new Error('expected a rejection')
}

/** A chat call that resolves to 'ok' or the refusal code (or status when there is no code). */
export async function outcome(
  ai: OpenAI,
  body: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {},
): Promise<string> {
  try {
    await ai.chat.completions.create({ model: 'qwen-plus', messages: USER, ...body })
    return 'ok'
  } catch (err) {
    const e = err as InstanceType<typeof OpenAI.APIError>
    return String(e.code ?? e.status)
  }
}

/** POST with fetch, for what the SDK hides (raw bodies, headers, bad JSON). */
export async function post(sim: Simulator, body: string | object, headers: Record<string, string> = {}) {
  const res = await fetch(`${sim.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: 'Bearer sk-sim', 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: res.status, headers: res.headers, text: await res.text() }
}

export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of stream) out.push(item)
  return out
}
