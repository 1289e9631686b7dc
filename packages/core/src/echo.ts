/**
 * A request's value quoted in an error message, so the caller sees what was wrong with it: a string
 * in JSON quotes (`"10"`), a number as written (`10`, `NaN`), anything else as its JSON text (`true`,
 * `{"a":1}`) or its type when JSON cannot hold it (`undefined`, a BigInt, a cycle). At most 64
 * characters of it are kept. Request data may hold anything: this never throws.
 */
export function echo(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(shorten(value))
  if (typeof value === 'number') return String(value)
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch {
    text = undefined
  }
  return shorten(text ?? typeof value)
}

function shorten(text: string): string {
  return text.length > 64 ? `${text.slice(0, 64)}…` : text
}
