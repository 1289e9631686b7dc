/**
 * One log line for an unexpected error: its name, code and message, never its stack, with anything
 * shaped like an API key masked, and each of `secrets` (the guard's configured keys: one of any shape,
 * `sk-sim`, would not match the pattern) of 6 characters or more. Log lines must not carry what a
 * response may not (keys, stacks).
 */
export function safeErrorLine(error: unknown, secrets: readonly string[] = []): string {
  let line: string
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    const head = typeof code === 'string' || typeof code === 'number' ? `${error.name} (${code})` : error.name
    line = `${head}: ${error.message.split('\n', 1)[0]}`
  } else line = String(error)
  for (const secret of secrets) if (secret.length >= 6) line = line.replaceAll(secret, '***')
  return maskKeys(line)
}

/** DashScope keys look like `sk-` followed by letters and digits; Bearer tokens of any kind too. */
export function maskKeys(text: string): string {
  return text.replace(/\bsk-[A-Za-z0-9_-]{4,}/g, 'sk-***').replace(/(Bearer\s+)[^\s"']+/gi, '$1***')
}
