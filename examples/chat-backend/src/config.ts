/**
 * Reads the example's configuration from the environment. Every mistake becomes a ConfigError whose
 * message names the variable and fits on one line, so `server.ts` can print it and exit 1 before
 * anything starts. Secrets are kept out of every message.
 */

/** Where the chat calls go. */
export type UpstreamConfig = { kind: 'simulator' } | { kind: 'qwen'; apiKey: string; baseURL: string }

export interface Config {
  port: number
  /** Interface to listen on. Default 127.0.0.1: a demo with no login should not face the network. */
  host: string
  upstream: UpstreamConfig
  /** ioredis URL; absent means the guard keeps its state in memory. */
  redisUrl?: string
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Singapore, as in @qwen-guard/core: keys only work in the region that issued them. */
export const DEFAULT_QWEN_BASE_URL = 'https://dashscope-intl.aliyuncs.com/compatible-mode/v1'

type Env = Readonly<Record<string, string | undefined>>

export function loadConfig(env: Env): Config {
  const port = parsePort(env.PORT)
  const host = nonEmpty(env.HOST) ?? '127.0.0.1'
  const apiKey = nonEmpty(env.DASHSCOPE_API_KEY)
  const baseURL = nonEmpty(env.QWEN_BASE_URL)

  let upstream: UpstreamConfig
  if (apiKey) {
    upstream = {
      kind: 'qwen',
      apiKey,
      baseURL: parseUrl('QWEN_BASE_URL', baseURL ?? DEFAULT_QWEN_BASE_URL, ['http:', 'https:']),
    }
  } else if (baseURL) {
    // Silently using the simulator here would make someone believe they are talking to Qwen.
    throw new ConfigError(
      'QWEN_BASE_URL is set but DASHSCOPE_API_KEY is not: set both to use Qwen, or neither to use the built-in simulator',
    )
  } else {
    upstream = { kind: 'simulator' }
  }

  const redisRaw = nonEmpty(env.REDIS_URL)
  const config: Config = { port, host, upstream }
  if (redisRaw) config.redisUrl = parseUrl('REDIS_URL', redisRaw, ['redis:', 'rediss:'])
  return config
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim()
  return trimmed ? trimmed : undefined
}

function parsePort(raw: string | undefined): number {
  const value = nonEmpty(raw)
  if (value === undefined) return 3000
  // Number('') and Number('3e3') would both slip through a plain Number() check.
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new ConfigError(`PORT must be a whole number from 0 to 65535, got "${value}"`)
  }
  return Number(value)
}

function parseUrl(name: string, value: string, protocols: string[]): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(`${name} is not a valid URL: "${redactUrl(value)}"`)
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(
      `${name} must start with ${protocols.map((p) => `${p}//`).join(' or ')}, got "${redactUrl(value)}"`,
    )
  }
  return value.replace(/\/+$/, '')
}

/** A URL fit for a log line: any user name or password replaced. Redis URLs often carry a password. */
export function redactUrl(value: string): string {
  try {
    const url = new URL(value)
    if (url.username || url.password) {
      url.username = url.username ? '***' : ''
      url.password = url.password ? '***' : ''
    }
    return url.toString()
  } catch {
    // Unparseable: strip anything between "//" and "@", where credentials would sit.
    return value.replace(/\/\/[^/@]*@/, '//***@')
  }
}
