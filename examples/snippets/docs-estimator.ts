// packages/core/docs/estimator.md, the opening example. Compiled only.
import type { TokenEstimator } from '@qwen-guard/core'

declare const myExactTokenizer: TokenEstimator
// #region readme
import { createEstimator, createGuard, estimateTextTokens } from '@qwen-guard/core'
estimateTextTokens('你好！') // 2
createEstimator().countPromptTokens([{ role: 'user', content: 'Hello!' }]) // 10
createGuard({ upstream: { apiKey: process.env.DASHSCOPE_API_KEY! }, estimator: myExactTokenizer }) // any { countPromptTokens(messages) }
// #endregion readme
