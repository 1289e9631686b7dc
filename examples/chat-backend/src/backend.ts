/**
 * Starts what the app talks to: the embedded Qwen simulator (the default) or nothing at all for the
 * real Qwen, and an ioredis client when REDIS_URL is set. Everything started here is closed by the
 * returned `close()`, in reverse order.
 */
import { Redis } from 'ioredis'
import { startSimulator, type SimulatorOptions } from '@qwen-guard/simulator'
import type { StoreOptions, UpstreamOptions } from '@qwen-guard/core'
import { ConfigError, redactUrl, type Config } from './config.js'
import { SIMULATED_LATENCY, SIMULATED_MODEL_LIMITS } from './demo-settings.js'

export interface Backend {
  backend: 'simulator' | 'qwen'
  upstream: UpstreamOptions
  store?: StoreOptions
  /** One line for the start banner, without secrets. */
  description: string
  close(): Promise<void>
}

/** The simulator's only account key: it never leaves this process. */
const SIMULATOR_KEY = 'sk-sim-demo'

/** The demo's simulator: qwen3-max-like latency and the scarce qwen3-max of demo-settings.ts. */
export function demoSimulatorOptions(overrides: SimulatorOptions = {}): SimulatorOptions {
  return {
    port: 0,
    accounts: [{ id: 'demo', keys: [SIMULATOR_KEY] }],
    limits: { ...SIMULATED_MODEL_LIMITS },
    ttftMs: SIMULATED_LATENCY.firstTokenMs,
    perTokenMs: SIMULATED_LATENCY.perTokenMs,
    ...overrides,
  }
}

/** Guard upstream options for a running simulator started with `demoSimulatorOptions`. */
export function simulatorUpstream(url: string): UpstreamOptions {
  return { baseURL: url, apiKey: SIMULATOR_KEY }
}

export async function startBackend(config: Config): Promise<Backend> {
  const closers: Array<() => Promise<void>> = []
  const close = async () => {
    for (const closer of closers.reverse()) await closer().catch(() => undefined)
  }
  try {
    let store: StoreOptions | undefined
    let storeText = 'in-memory limits'
    if (config.redisUrl) {
      const redis = await connectRedis(config.redisUrl)
      closers.push(async () => void (await redis.quit().catch(() => redis.disconnect())))
      store = { redis, prefix: 'qg-demo' }
      storeText = `limits shared through Redis at ${redactUrl(config.redisUrl)}`
    }

    if (config.upstream.kind === 'qwen') {
      return {
        backend: 'qwen',
        upstream: { baseURL: config.upstream.baseURL, apiKey: config.upstream.apiKey },
        ...(store ? { store } : {}),
        description: `Qwen at ${config.upstream.baseURL}, ${storeText}`,
        close,
      }
    }

    const simulator = await startSimulator(demoSimulatorOptions())
    closers.push(() => simulator.close())
    return {
      backend: 'simulator',
      upstream: simulatorUpstream(simulator.url),
      ...(store ? { store } : {}),
      description: `embedded Qwen simulator at ${simulator.url}, ${storeText}`,
      close,
    }
  } catch (error) {
    await close()
    throw error
  }
}

/** Connects and pings once, so an unreachable Redis fails the start instead of the first chat. */
async function connectRedis(url: string): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 3_000,
    maxRetriesPerRequest: 2,
    // No reconnect loop while starting: one failed attempt is the answer we need.
    retryStrategy: () => null,
  })
  // ioredis emits the cause (ECONNREFUSED...) as an 'error' event, and connect() only rejects with
  // "Connection is closed": keep the cause for the message. The listener also keeps Node quiet.
  let cause: string | undefined
  const quiet = (error: Error) => {
    cause ??= error.message
  }
  redis.on('error', quiet)
  try {
    await redis.connect()
    await redis.ping()
  } catch (error) {
    redis.disconnect()
    const reason = cause ?? (error instanceof Error ? error.message : String(error))
    throw new ConfigError(`REDIS_URL: cannot reach Redis at ${redactUrl(url)} (${reason})`)
  }
  // Running: reconnect with a capped backoff; the guard's store policy covers the outage meanwhile.
  redis.options.retryStrategy = (times: number) => Math.min(times * 200, 2_000)
  redis.off('error', quiet)
  redis.on('error', (error: Error) => console.warn(`[chat-backend] Redis: ${error.message}`))
  return redis
}
