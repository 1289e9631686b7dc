/**
 * The headers of a guarded answer, held as the guard wrote them until somebody changes them.
 *
 * Every answer carries a dozen quota headers, and the `openai` SDK reads all of an answer's headers
 * twice per call (for its log line, whatever the log level). A real `Headers` checks every byte of
 * every name and value on the way in and sorts them on the way out, per call, for headers the guard
 * made itself, already lowercase and valid (bench/RESULTS.md). This is a real `Headers` (instanceof holds, every
 * method works) that answers reads from a sorted list built once, and turns into an ordinary
 * `Headers` on the first change.
 */
const INSPECT = Symbol.for('nodejs.util.inspect.custom')

export class PreparedHeaders extends Headers {
  /** Sorted by name; undefined once the entries live in the real Headers. */
  #list: Array<[string, string]> | undefined

  /**
   * `record`: lowercase header names and values the guard wrote, valid as they are: numbers, its own
   * formats and model names (options.ts refuses a model name that could not be a header value).
   */
  constructor(record: Readonly<Record<string, string>>) {
    super()
    // Insertion sort: the guard writes its headers nearly in order, so this is one pass.
    const list: Array<[string, string]> = []
    for (const name in record) {
      let at = list.length
      while (at > 0 && list[at - 1]![0] > name) at--
      list.splice(at, 0, [name, record[name]!])
    }
    this.#list = list
  }

  override get(name: string): string | null {
    const list = this.#list
    if (!list) return super.get(name)
    const wanted = name.toLowerCase()
    for (const [key, value] of list) if (key === wanted) return value
    return super.get(name) // null, or the TypeError Headers throws for an invalid name
  }

  override has(name: string): boolean {
    return this.get(name) !== null
  }

  override getSetCookie(): string[] {
    return this.#list ? [] : super.getSetCookie()
  }

  override append(name: string, value: string): void {
    this.#materialize()
    super.append(name, value)
  }

  override set(name: string, value: string): void {
    this.#materialize()
    super.set(name, value)
  }

  override delete(name: string): void {
    this.#materialize()
    super.delete(name)
  }

  override forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    const list = this.#list
    if (!list) return super.forEach(callback, thisArg)
    for (const [key, value] of list) callback.call(thisArg, value, key, this)
  }

  override entries(): HeadersIterator<[string, string]> {
    const list = this.#list
    if (!list) return super.entries()
    return list.map(([key, value]): [string, string] => [key, value])[Symbol.iterator]() as HeadersIterator<
      [string, string]
    >
  }

  override keys(): HeadersIterator<string> {
    const list = this.#list
    if (!list) return super.keys()
    return list.map(([key]) => key)[Symbol.iterator]() as HeadersIterator<string>
  }

  override values(): HeadersIterator<string> {
    const list = this.#list
    if (!list) return super.values()
    return list.map(([, value]) => value)[Symbol.iterator]() as HeadersIterator<string>
  }

  override [Symbol.iterator](): HeadersIterator<[string, string]> {
    return this.entries()
  }

  /** `console.log(headers)` shows the entries, like Headers does. */
  [INSPECT](...args: unknown[]): unknown {
    this.#materialize()
    const inspect = (Headers.prototype as unknown as Record<symbol, ((...a: unknown[]) => unknown) | undefined>)[
      INSPECT
    ]
    return inspect ? inspect.apply(this, args) : Object.fromEntries(super.entries())
  }

  /** Moves the list into the real Headers (validating it as Headers does); later reads go there. */
  #materialize(): void {
    const list = this.#list
    if (!list) return
    this.#list = undefined
    for (const [key, value] of list) super.append(key, value)
  }
}
