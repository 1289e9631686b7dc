// packages/simulator/README.md, "Accounts". Compiled only.
import { startSimulator } from '@qwen-guard/simulator'

await startSimulator({
  // #region readme
  accounts: [
    { id: 'a', keys: ['sk-a1', 'sk-a2'] }, // keys of one account share its quota
    { id: 'b', keys: ['sk-b'], models: { 'qwen3-max': { rpm: 60 } } }, // per-account overrides, over `limits`
    { id: 'trial', keys: ['sk-t'], freeTokens: 10_000 }, // free allowance per model
    { id: 'late', keys: ['sk-l'], state: 'arrears' }, // or 'free_tier_only'
  ],
  // #endregion readme
})
