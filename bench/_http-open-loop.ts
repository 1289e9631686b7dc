// Open-loop load for `pnpm bench http` (relay latency): in its own process, sends POST requests at a
// fixed rate whatever the answers do (a timer every millisecond sends every request whose moment has
// come), each timed from its write to the last byte of its answer with performance.now(). Open loop,
// so a slow answer does not delay the next request (no coordinated omission); the requests' own
// lateness (the sender behind its schedule) is reported too. Keep-alive sockets, as many as needed.
//
// Usage (bench/http.ts forks it): the parent sends { url, headers, body, rate, seconds } and gets back
// { sent, failed, lateP99Ms, samples } (samples: latency in ms of every answered request, sorted).
import { Agent, request } from 'node:http'
import { performance } from 'node:perf_hooks'

export interface OpenLoopJob {
  url: string
  headers: Record<string, string>
  body: string
  /** Requests per second. */
  rate: number
  seconds: number
}

export interface OpenLoopResult {
  sent: number
  failed: number
  /** How late the sender was behind its schedule, p99, ms. */
  lateP99Ms: number
  /** Latency (ms, write to last byte) of every answered request, sorted. */
  samples: number[]
}

async function run(job: OpenLoopJob): Promise<OpenLoopResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 })
  const samples: number[] = []
  const late: number[] = []
  let sent = 0
  let failed = 0
  let answered = 0
  const total = Math.round(job.rate * job.seconds)
  const interval = 1000 / job.rate
  const send = () => {
    const started = performance.now()
    const req = request(job.url, { method: 'POST', agent, headers: job.headers }, (res) => {
      res.resume()
      res.once('end', () => {
        answered++
        if ((res.statusCode ?? 0) >= 400) failed++
        else samples.push(performance.now() - started)
      })
    })
    req.once('error', () => {
      answered++
      failed++
    })
    req.end(job.body)
  }
  const start = performance.now() + 5
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now()
      while (sent < total && start + sent * interval <= now) {
        late.push(now - (start + sent * interval))
        sent++
        send()
      }
      if (sent >= total) return resolve()
      setTimeout(tick, Math.max(0, Math.min(1, start + sent * interval - performance.now())))
    }
    setTimeout(tick, 5)
  })
  const deadline = performance.now() + 5_000
  while (answered < sent && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  failed += sent - answered
  agent.destroy()
  samples.sort((a, b) => a - b)
  late.sort((a, b) => a - b)
  return { sent, failed, lateP99Ms: late[Math.floor(0.99 * late.length)] ?? 0, samples }
}

if (process.send) {
  process.on('message', (job: OpenLoopJob) => {
    void run(job).then((result) => process.send!(result))
  })
  process.send('ready')
}
