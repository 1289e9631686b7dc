// `pnpm bench sim`: capacity of @qwen-guard/simulator on this machine. The simulator runs in a child
// process (its own CLI), the load comes from autocannon in this process: non-streaming chat calls at
// zero latency over loopback, limits high enough that nothing is refused (refusals would be counted
// as errors). Goal: >= 5,000 req/s, so the simulator is never the bottleneck of the guard's benchmarks.
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const GOAL_RPS = 5_000
const WARMUP_S = 1
const DURATION_S = Number(process.env.BENCH_SECONDS ?? 5)
const CONNECTIONS = 32

/** The part of autocannon's API used here (it ships no type declarations). */
interface AutocannonResult {
  requests: { average: number; total: number }
  latency: { p50: number; p99: number; average: number }
  errors: number
  timeouts: number
  non2xx: number
  '2xx': number
}
type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

const root = fileURLToPath(new URL('..', import.meta.url))

/** Starts the simulator CLI in a child process and resolves with its URL and the child. */
async function startChild() {
  const child = spawn(
    process.execPath,
    [
      '--conditions=source',
      '--import',
      'tsx',
      'packages/simulator/src/cli.ts',
      '--port',
      '0',
      '--no-burst',
      '--limit',
      'qwen-plus:1000000000:1000000000000000',
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  )
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const line = out.split('\n').find((l) => l.startsWith('http://'))
      if (line) resolve(line.trim())
    })
    child.once('exit', (code) => reject(new Error(`simulator exited early (${code})`)))
  })
  return { child, url }
}

function load(url: string, seconds: number) {
  return autocannon({
    url: `${url}/chat/completions`,
    method: 'POST',
    headers: { authorization: 'Bearer sk-sim', 'content-type': 'application/json' },
    // A short chat and the default completion length (64 tokens): a typical small call.
    body: JSON.stringify({
      model: 'qwen-plus',
      messages: [{ role: 'user', content: 'Write a haiku about rate limits.' }],
    }),
    connections: CONNECTIONS,
    duration: seconds,
  })
}

const { child, url } = await startChild()
try {
  await load(url, WARMUP_S) // JIT warm-up, not reported
  const r = await load(url, DURATION_S)
  const errors = r.errors + r.timeouts + r.non2xx
  const pass = r.requests.average >= GOAL_RPS && errors === 0
  console.log(
    `\nsimulator capacity (server in a child process, autocannon ${CONNECTIONS} connections, ${DURATION_S} s, non-streaming, zero latency)\n`,
  )
  console.table([
    {
      'req/s (avg)': Math.round(r.requests.average),
      requests: r.requests.total,
      'p50 ms': r.latency.p50,
      'p99 ms': r.latency.p99,
      errors,
      goal: `>= ${GOAL_RPS} req/s`,
      result: pass ? 'PASS' : 'FAIL',
    },
  ])
  process.exitCode = pass ? 0 : 1
} finally {
  child.kill('SIGTERM')
}
