/**
 * Checks what the page posts to /api/chat. The page sends the visible conversation; the server
 * keeps only the recent turns so a long chat cannot outgrow the demo's token quota on its own.
 */
import type OpenAI from 'openai'

const MAX_TURNS = 12
const MAX_CHARS = 4_000
const SYSTEM_PROMPT = 'You are a helpful, concise assistant in the qwen-guard demo chat.'

export type ChatBody =
  | { ok: true; messages: OpenAI.ChatCompletionMessageParam[]; burst: boolean }
  | { ok: false; message: string; param: string }

export function parseChatBody(raw: unknown): ChatBody {
  if (typeof raw !== 'object' || raw === null) return fail('body must be a JSON object', 'body')
  const { messages, burst } = raw as { messages?: unknown; burst?: unknown }
  if (!Array.isArray(messages) || messages.length === 0) return fail('messages must be a non-empty array', 'messages')

  const turns: OpenAI.ChatCompletionMessageParam[] = []
  for (const [index, message] of messages.slice(-MAX_TURNS).entries()) {
    const { role, content } = (message ?? {}) as { role?: unknown; content?: unknown }
    if (role !== 'user' && role !== 'assistant')
      return fail('role must be "user" or "assistant"', `messages[${index}].role`)
    if (typeof content !== 'string' || content.trim() === '')
      return fail('content must be a non-empty string', `messages[${index}].content`)
    if (content.length > MAX_CHARS)
      return fail(`content is limited to ${MAX_CHARS} characters`, `messages[${index}].content`)
    turns.push({ role, content })
  }
  if (turns[turns.length - 1]?.role !== 'user') return fail('the last message must be from the user', 'messages')
  return { ok: true, messages: [{ role: 'system', content: SYSTEM_PROMPT }, ...turns], burst: burst === true }
}

function fail(message: string, param: string): ChatBody {
  return { ok: false, message, param }
}
