/**
 * Prometheus metrics of a guard (docs/metrics.md), built on its events and on the upstream pool's
 * state read at scrape time. prom-client is an optional peer dependency: it is imported (dynamic
 * `import()`, in the ESM and CJS builds alike) only when `GuardOptions.metrics` is set. Events that
 * arrive while it loads are kept and counted once it has loaded. Labels are bounded: scopes,
 * dimensions, outcomes and refusal kinds are fixed sets; accounts and models are the configured
 * ones. No user, key or API key is ever a label.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { safeErrorLine } from './safe-error-line.js'
import type { Emitter } from './events.js'
import type { UpstreamState } from './upstream/types.js'
import type { GuardEvent, MetricsRegistry, ResolvedOptions } from './types.js'

/** The answer of a scrape: Prometheus text exposition format. */
export interface MetricsScrape {
  /** `text/plain; version=0.0.4; charset=utf-8` (the registry's content type). */
  contentType: string
  body: string
}

/**
 * What `guard.metrics()` returns: a Node request handler `(req, res) => void`, usable as an Express
 * route or middleware (`app.get('/metrics', guard.metrics())`), answering 200 with the exposition
 * text, or 500 (text: how to install it, no path) when prom-client cannot be loaded (tried again at
 * each scrape, so installing it needs no restart). `scrape()` gives the text to other frameworks.
 */
export interface MetricsHandler {
  (req: IncomingMessage, res: ServerResponse): void
  /** @throws Error when prom-client is not installed */
  scrape(): Promise<MetricsScrape>
}

/** Events kept while prom-client loads; past this many the oldest are dropped. */
const MAX_PENDING = 10_000

interface Recorder {
  event(event: GuardEvent): void
  overhead(seconds: number): void
}

export interface GuardMetrics {
  /** The guard's own time in an answered call, every wait that is not its work excluded (seconds; call.ts OwnTime). */
  overhead(seconds: number): void
  handler(): MetricsHandler
}

type PromClient = typeof import('prom-client')

/** The `dimension` label values of `upstream_utilisation_ratio`. */
const UPSTREAM_DIMENSIONS = ['rpm', 'tpm', 'rps', 'tps'] as const

/** Subscribes to the guard's events now; loads prom-client in the background. */
export function createGuardMetrics(
  config: NonNullable<ResolvedOptions['metrics']>,
  events: Emitter,
  upstreamState: () => UpstreamState[],
): GuardMetrics {
  let recorder: Recorder | undefined
  let pending: Array<GuardEvent | number> = []
  let failed = false
  const keep = (item: GuardEvent | number) => {
    if (failed) return
    if (pending.length >= MAX_PENDING) pending.shift()
    pending.push(item)
  }
  const onEvent = (event: GuardEvent) => (recorder ? recorder.event(event) : keep(event))
  for (const type of EVENT_TYPES) events.on(type, onEvent)

  const load = (): Promise<MetricsRegistry> => {
    const loading = loadPromClient().then((client) => {
      const registry = config.registry ?? (new client.Registry() as unknown as MetricsRegistry)
      recorder = buildRecorder(client, registry, config.prefix, upstreamState)
      for (const item of pending) {
        if (typeof item === 'number') recorder.overhead(item)
        else recorder.event(item)
      }
      pending = []
      failed = false
      return registry
    })
    loading.catch((error: unknown) => {
      if (failed) return
      failed = true // nothing will count events, so none are kept
      pending = []
      // prom-client missing, or the metrics refused by it (a name already in the given registry).
      console.error(
        `[qwen-guard] ${error instanceof MissingPromClient ? MISSING_PROM_CLIENT : `metrics: ${safeErrorLine(error)}`}`,
      )
    })
    return loading
  }
  let ready = load()

  async function scrape(): Promise<MetricsScrape> {
    // Installed since? Loaded at the next scrape, no restart needed (counting starts then).
    if (failed) ready = load()
    const registry = await ready
    return { contentType: registry.contentType, body: await registry.metrics() }
  }

  return {
    overhead(seconds) {
      if (recorder) recorder.overhead(seconds)
      else keep(seconds)
    },
    handler() {
      const handle = (_req: IncomingMessage, res: ServerResponse): void => {
        scrape().then(
          ({ contentType, body }) => {
            res.statusCode = 200
            res.setHeader('content-type', contentType)
            res.end(body)
          },
          (error: unknown) => {
            res.statusCode = 500
            res.setHeader('content-type', 'text/plain; charset=utf-8')
            res.end(`${(error as Error).message}\n`)
          },
        )
      }
      return Object.assign(handle, { scrape })
    },
  }
}

const EVENT_TYPES = [
  'admitted',
  'refused',
  'shadow_refused',
  'queued',
  'upstream_refusal',
  'settled',
  'store_error',
  'store_recovered',
] as const

const MISSING_PROM_CLIENT =
  'metrics are on but prom-client cannot be loaded: install the optional peer dependency (npm install prom-client); the next scrape loads it'

/**
 * prom-client, or an Error saying how to get it. Its message names no path (the loader's own error,
 * with the app's file paths and require stack, is only its `cause`): a scrape answer repeats it.
 */
async function loadPromClient(): Promise<PromClient> {
  try {
    const loaded = (await import('prom-client')) as PromClient & { default?: PromClient }
    // CJS interop: the namespace's named exports, or its default export when a bundler wrapped it.
    return typeof loaded.Registry === 'function' ? loaded : (loaded.default as PromClient)
  } catch (error) {
    throw new MissingPromClient(error)
  }
}

class MissingPromClient extends Error {
  constructor(cause: unknown) {
    super(`qwen-guard ${MISSING_PROM_CLIENT}`, { cause })
  }
}

function buildRecorder(
  client: PromClient,
  registry: MetricsRegistry,
  prefix: string,
  upstreamState: () => UpstreamState[],
): Recorder {
  const registers = [registry as unknown as InstanceType<PromClient['Registry']>]
  const decisions = new client.Counter({
    name: `${prefix}decisions_total`,
    help: 'Decisions on calls: admitted (Qwen answered), refused (by a quota, the upstream, the store or the request), queued (waited for upstream capacity), shadow_refused (a shadow-mode quota would have refused it; the call went on).',
    labelNames: ['scope', 'dimension', 'outcome'] as const,
    registers,
  })
  const queueWait = new client.Histogram({
    name: `${prefix}queue_wait_seconds`,
    help: 'Time an admitted call waited for upstream capacity (account x model pace), in seconds.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  })
  const upstreamRequests = new client.Counter({
    name: `${prefix}upstream_requests_total`,
    help: 'Requests Qwen answered or refused, per configured account and model; outcome is "answered" or the refusal kind.',
    labelNames: ['account', 'model', 'outcome'] as const,
    registers,
  })
  const upstreamRefusals = new client.Counter({
    name: `${prefix}upstream_refusals_total`,
    help: 'Upstream refusals and failures per model; code is the kind the guard classified it as (requests, tokens, burst, server, timeout, ...).',
    labelNames: ['model', 'code'] as const,
    registers,
  })
  const tokens = new client.Counter({
    name: `${prefix}tokens_total`,
    help: 'Tokens of settled calls: reserved at admission, settled (charged), refunded (reserved - charged) and charged_extra (charged - reserved).',
    labelNames: ['kind'] as const,
    registers,
  })
  new client.Gauge({
    name: `${prefix}upstream_utilisation_ratio`,
    help: 'Fraction used of each upstream limit of each account x model (dimension rpm, tpm, rps, tps: the sliding window sum over the limit), 0..1+.',
    labelNames: ['account', 'model', 'dimension'] as const,
    registers,
    collect() {
      for (const lane of upstreamState()) {
        for (const dimension of UPSTREAM_DIMENSIONS) {
          const ratio = lane.used[dimension]
          this.set({ account: lane.account, model: lane.model, dimension }, Number.isFinite(ratio) ? ratio : 0)
        }
      }
    },
  })
  const overhead = new client.Summary({
    name: `${prefix}overhead_seconds`,
    help: "The guard's own time per answered call, in seconds: from taking the call to handing back Qwen's answer, less the waits for Qwen, the upstream queue, a concurrency lease and retry backoff.",
    percentiles: [0.5, 0.9, 0.99],
    // Two age buckets: quantiles over the last 5 to 10 minutes. Each bucket is a t-digest that every
    // observation goes into; prom-client's default five cost more per call (bench/RESULTS.md, metrics' cost).
    maxAgeSeconds: 600,
    ageBuckets: 2,
    registers,
  })
  const storeUp = new client.Gauge({
    name: `${prefix}store_up`,
    help: '1 while the store (memory or Redis) answers, 0 during an outage (store_error until store_recovered).',
    registers,
  })
  storeUp.set(1)
  // Fixed label sets, bound once: an inc on a bound child skips hashing the labels on every call.
  const admittedDecisions = decisions.labels({ scope: 'all', dimension: 'none', outcome: 'admitted' })
  const reservedTokens = tokens.labels({ kind: 'reserved' })
  const settledTokens = tokens.labels({ kind: 'settled' })
  const refundedTokens = tokens.labels({ kind: 'refunded' })
  const extraTokens = tokens.labels({ kind: 'charged_extra' })
  for (const kind of ['reserved', 'settled', 'refunded', 'charged_extra']) tokens.inc({ kind }, 0)

  return {
    overhead: (seconds) => overhead.observe(Math.max(0, seconds)),
    event(event) {
      switch (event.type) {
        case 'admitted':
          admittedDecisions.inc()
          queueWait.observe(event.queuedMs / 1000)
          upstreamRequests.inc({ account: event.account, model: event.model, outcome: 'answered' })
          return
        case 'refused':
          decisions.inc({ scope: event.scope, dimension: event.dimension ?? 'none', outcome: 'refused' })
          return
        case 'queued':
          decisions.inc({ scope: 'upstream', dimension: 'none', outcome: 'queued' })
          return
        case 'shadow_refused':
          decisions.inc({ scope: event.scope, dimension: event.dimension ?? 'none', outcome: 'shadow_refused' })
          return
        case 'upstream_refusal':
          upstreamRequests.inc({ account: event.account, model: event.model, outcome: event.kind })
          upstreamRefusals.inc({ model: event.model, code: event.kind })
          return
        case 'settled': {
          const { usedTokens } = event
          reservedTokens.inc(event.reservedTokens)
          settledTokens.inc(usedTokens)
          refundedTokens.inc(Math.max(0, event.reservedTokens - usedTokens))
          extraTokens.inc(Math.max(0, usedTokens - event.reservedTokens))
          return
        }
        case 'store_error':
          storeUp.set(0)
          return
        case 'store_recovered':
          storeUp.set(1)
          for (const kind of ['reserved', 'settled', 'refunded', 'charged_extra']) tokens.inc({ kind }, 0)
          return
      }
    },
  }
}
