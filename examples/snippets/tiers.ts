// README.md, "Tiers and tenants". Compiled only.
/* eslint-disable @typescript-eslint/no-unused-vars -- the README shows both parts of the identity the quotas function gets */
// #region readme
import { createGuard } from '@qwen-guard/core'
declare function planOf(user: string | undefined): Promise<'free' | 'pro' | 'suspended'> // your own lookup

const tiers = {
  free: { rpm: 5, tokensPerDay: 20_000 },
  pro: { rpm: 60, tpm: 200_000, usdPerDay: 5 },
  suspended: { rpm: 0 },
}
createGuard({
  upstream: { apiKey: process.env.DASHSCOPE_API_KEY! },
  quotas: async ({ user, key }) => ({ user: tiers[await planOf(user)], key: { rpm: 600 } }),
})
// #endregion readme
