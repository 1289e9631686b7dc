/**
 * One log line for an unexpected error: its name, code and message, never its stack, with anything
 * shaped like an API key masked. Log lines must not carry what a response may not (keys, stacks).
 */
export function safeErrorLine(error: unknown): string {
  if (!(error instanceof Error)) return maskKeys(String(error))
  const code = (error as { code?: unknown }).code
  const head = typeof code === 'string' || typeof code === 'number' ? `${error.name} (${code})` : error.name
  return maskKeys(`${head}: ${error.message.split('\n', 1)[0]}`)
}

/** DashScope keys look like `sk-` followed by letters and digits; Bearer tokens of any kind too. */
export function maskKeys(text: string): string {
  return text.replace(/\bsk-[A-Za-z0-9_-]{4,}/g, 'sk-***').replace(/(Bearer\s+)[^\s"']+/gi, '$1***')
}
