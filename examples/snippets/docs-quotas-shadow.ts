// packages/core/docs/quotas.md, "Shadow mode". Compiled only.
import { createGuard, type QuotaOption } from '@qwen-guard/core'

declare function canary(user: string | undefined): boolean // your own choice of identities
// #region readme
const quotas: QuotaOption = {
  user: { rpm: 20, tpm: 40_000, mode: 'shadow' }, // being tried
  key: { rpm: 600 }, // enforced
}
// or per identity, e.g. a canary group first:
const canaryFirst: QuotaOption = (id) => ({ user: { rpm: 20, ...(canary(id.user) ? { mode: 'shadow' } : {}) } })
// #endregion readme
createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, quotas })
createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, quotas: canaryFirst })
