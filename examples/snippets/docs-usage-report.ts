// packages/core/docs/usage-report.md, "The report". Compiled only.
import { createGuard } from '@qwen-guard/core'

const guard = createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! } })
// #region readme
const report = await guard.usageReport({ from: Date.now() - 7 * 86_400_000, to: new Date() })
// #endregion readme
export { report }
