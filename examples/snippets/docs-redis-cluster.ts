// packages/core/docs/redis-cluster.md, the set-up. Compiled only.
// #region readme
import { Cluster } from 'ioredis'
import { createGuard } from '@qwen-guard/core'

const redis = new Cluster([
  { host: '10.0.0.1', port: 6379 },
  { host: '10.0.0.2', port: 6379 },
  { host: '10.0.0.3', port: 6379 },
])

const guard = createGuard({
  upstream: { accounts: [{ id: 'main', apiKeys: [process.env.DASHSCOPE_API_KEY!] }] },
  quotas: { user: { rpm: 20, tpm: 40_000, concurrency: 2 } },
  store: { redis, onError: 'closed' },
})
// #endregion readme
export { guard }
