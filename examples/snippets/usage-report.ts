// README.md, "Asking Alibaba Cloud for more quota". Runs against the simulator in test/readme-snippets.test.ts.
// #region readme
import { createGuard } from '@qwen-guard/core'

// The usage recorder is on by default: 7 days of per-minute figures, in memory or in your Redis (store.redis).
const guard = createGuard({
  upstream: { apiKey: process.env.DASHSCOPE_API_KEY! },
  usage: { retentionMs: 7 * 86_400_000 },
})
await guard
  .client({ user: 'u1' })
  .chat.completions.create({ model: 'qwen-plus', messages: [{ role: 'user', content: 'hi' }] })

const report = await guard.usageReport({ from: Date.now() - 7 * 86_400_000, to: new Date() })
for (const lane of report.lanes) {
  const { requestsPerMinute: rpm, tokensPerMinute: tpm } = lane.peaks
  console.log(
    `${lane.account} x ${lane.model}: peak ${rpm.value}/${rpm.limit} RPM, ${tpm.value}/${tpm.limit} TPM, ` +
      `at the limit ${(lane.atLimit.share * 100).toFixed(1)} % of the time, ` +
      `queue p99 ${lane.queueWaits.p99Ms} ms, ${lane.refusals.total} upstream refusals, ${lane.fallbacks} fallbacks`,
  )
}
await guard.close()
// #endregion readme

export { report }
