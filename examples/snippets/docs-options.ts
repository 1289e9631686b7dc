// packages/core/docs/options.md, the opening example. Compiled only.
import { createGuard } from '@qwen-guard/core'
// #region readme
createGuard({
  upstream: {
    accounts: [
      { id: 'a', apiKeys: ['sk-1', 'sk-2'] },
      { id: 'b', apiKey: 'sk-3' },
    ],
  },
  models: { 'qwen3-max': { fallback: ['qwen-plus', 'qwen-flash'] } },
  quotas: { user: { rpm: 20, rps: 2, tpm: 40_000, concurrency: 2, tokensPerDay: 500_000, usdPerDay: 1 } },
  queue: { maxWaitMs: 10_000 },
})
// #endregion readme
