// What a call tells the app and the operator: one disable line per disable, the quotas function
// asked with the identity as given, the metrics' log line naming the real cause. Written by an
// attack, each test failed before its fix.
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createGuard } from '../src/guard.js'
import type { GuardOptions, Identity } from '../src/types.js'
import { completion, startUpstreamStub, type UpstreamStub } from './upstream-stub.js'

const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(open.splice(0).map((thing) => thing.close()))
})

async function setup(over: Partial<GuardOptions> = {}, upstream: Partial<GuardOptions['upstream']> = {}) {
  const stub: UpstreamStub = await startUpstreamStub()
  open.push(stub)
  const guard = createGuard({
    upstream: {
      baseURL: stub.baseURL,
      accounts: [{ id: 'acct-secret-1', apiKey: 'sk-secret-key-1' }],
      rampUp: false,
      timeoutMs: 5_000,
      maxAttempts: 1,
      ...upstream,
    },
    quotas: { user: { tpm: 100_000 } },
    ...over,
  })
  open.push(guard)
  return { stub, guard }
}

const ask = (guard: ReturnType<typeof createGuard>, user = 'u') =>
  guard
    .client({ user })
    .chat.completions.create({ model: 'qwen-plus', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })
    .then(
      () => 200,
      (e: { status?: number }) => e.status,
    )

describe('disabled-account-line: one line per account disable', () => {
  it('calls in flight when Qwen refuses the key log the disable once, not once per call', async () => {
    const { stub, guard } = await setup()
    stub.handle = (_req, res) => {
      // Qwen takes a moment to answer: several calls are in flight when the first refusal comes.
      setTimeout(() => {
        res.writeHead(401, { 'content-type': 'application/json' })
        res.end(
          JSON.stringify({
            error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key' },
          }),
        )
      }, 300)
    }
    const lines: string[] = []
    vi.spyOn(console, 'error').mockImplementation((line: unknown) => void lines.push(String(line)))
    const statuses = await Promise.all(Array.from({ length: 5 }, (_, i) => ask(guard, `u${i}`)))
    expect(stub.requests).toBeGreaterThan(1) // the calls were all sent before the first refusal
    expect(statuses.every((s) => s !== 200)).toBe(true)
    expect(lines.filter((l) => l.includes('out of service'))).toHaveLength(1)
  })
})

describe('identity parts longer than 256 characters', () => {
  it("the app's quotas function is asked with the identity the app gave (its tier lookup), not the hash", async () => {
    const longKey = `tenant-${'x'.repeat(300)}`
    const seen: Identity[] = []
    const { stub, guard } = await setup({
      quotas: (identity: Identity) => {
        seen.push(identity)
        // A tier lookup by the app's own key: the premium tenant gets 100,000 tpm, others 10.
        return identity.key === longKey ? { key: { tpm: 100_000 } } : { key: { tpm: 10 } }
      },
    })
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(completion({ prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 }))
    }
    const status = await guard
      .client({ user: 'alice', key: longKey })
      .chat.completions.create({ model: 'qwen-plus', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })
      .then(
        () => 200,
        (e: { status?: number }) => e.status,
      )
    expect(seen[0]?.key).toBe(longKey)
    expect(status).toBe(200)
  })
})

describe('metrics: the prom-client line', () => {
  it('a registry that refuses the metrics (two guards, one registry) is not reported as prom-client missing', async () => {
    const { Registry } = await import('prom-client')
    const registry = new Registry()
    const lines: string[] = []
    vi.spyOn(console, 'error').mockImplementation((line: unknown) => void lines.push(String(line)))
    const first = createGuard({ upstream: { apiKey: 'sk-x' } as never, metrics: { registry } as never })
    open.push(first)
    await first.metrics().scrape()
    const second = createGuard({ upstream: { apiKey: 'sk-y' } as never, metrics: { registry } as never })
    open.push(second)
    const answer = await second
      .metrics()
      .scrape()
      .then(
        () => 'ok',
        (e: Error) => e.message,
      )
    // The scrape's own answer names the real cause (a metric already registered)...
    expect(answer).toMatch(/already been registered/)
    // ...and so must the one log line: prom-client is installed and loaded.
    expect(lines.filter((l) => l.includes('prom-client cannot be loaded'))).toEqual([])
  })
})
