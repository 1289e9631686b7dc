// packages/core/docs/quotas.md, the opening example. Compiled only.
import { createGuard, type QuotaOption, type QuotaPolicy } from '@qwen-guard/core'

declare function isPro(user: string | undefined): Promise<boolean> // your own lookup
declare const pro: QuotaPolicy
declare const free: QuotaPolicy
// #region readme
const quotas: QuotaOption = {
  user: { rpm: 20, rps: 2, tpm: 40_000, concurrency: 2, tokensPerDay: 500_000, usdPerDay: 1 },
  key: { rpm: 600, tpm: 1_000_000 },
}
// or per identity (tiers, tenants), sync or async; each scope's policy under its name:
const tiered: QuotaOption = async ({ user }) => ({ user: (await isPro(user)) ? pro : free, key: { rpm: 600 } })
// #endregion readme
createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, quotas })
createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, quotas: tiered })
