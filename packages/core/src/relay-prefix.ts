/**
 * Where a relay is mounted, for the servers that match the mount themselves (Koa's `proxy()`,
 * `createNodeRelay`); Express matches `app.use('/v1', ...)` itself.
 */

/** '/v1/' -> '/v1', 'v1' -> '/v1'; '' and '/' mean every path (''). */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/\/+$/, '')
  return trimmed === '' ? '' : trimmed.startsWith('/') ? trimmed : `/${trimmed}`
}

/**
 * The part of `url` below `prefix` (a normalised prefix; `url` may carry a query string, kept):
 * `/chat/completions` for `/v1/chat/completions` under `/v1`, `/` for the prefix itself; undefined
 * when `url` is not under it (`/v10/x` is not under `/v1`).
 */
export function pathUnder(prefix: string, url: string): string | undefined {
  if (prefix === '') return url
  const query = url.indexOf('?')
  const path = query < 0 ? url : url.slice(0, query)
  if (path !== prefix && !path.startsWith(`${prefix}/`)) return undefined
  const rest = url.slice(prefix.length)
  return rest === '' || rest.startsWith('?') ? `/${rest}` : rest
}
