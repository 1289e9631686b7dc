/**
 * Prompts an app outside the workspace estimates with the INSTALLED @qwen-guard/core, under `import`
 * and under `require` (suite.cjs, and the pnpm-installed folder of pack-install.test.ts), against the
 * same estimate from src/. Between them they read every table of dist/vocabulary-tables.bin: Han
 * characters, pairs and words; Hangul; kana; one-token ASCII words and split chances (in capitals
 * too); glued words, Cyrillic words and whitespace (merges replayed); ASCII marks and symbols.
 * Mostly words of the vocabulary: a word that is not one token is checked against a filter salted per
 * process, which passes about 2 in 100,000 of them by mistake (estimate.ts), and would then read one
 * token less in one process than in another.
 */
'use strict'

const PROMPTS = {
  zh: [
    { role: 'system', content: '你是一个乐于助人的助手。' },
    { role: 'user', content: '请用三句话解释一下什么是令牌桶限流，并说明它和滑动窗口有什么不同。' },
  ],
  en: [
    { role: 'system', content: 'You are a helpful assistant.' },
    {
      role: 'user',
      content:
        'Explain in three sentences what a token bucket rate limiter is, and how it differs from a sliding window.',
    },
  ],
  mixed: [
    {
      role: 'user',
      content:
        '서울의 날씨는 어때요? 東京の天気はどうですか。Как дела сегодня? ' +
        'thethethethe makemakemake OAuthTokenProvider HTTPSERVERERROR → ✅ 😀\r\n\r\n' +
        '    if (a !== b) { return x?.y ?? z; } // ===== ~~~ ...\n\t\tdone',
    },
  ],
}

/** Each prompt's estimate by the built-in estimator of this copy of @qwen-guard/core. */
function estimates(core) {
  const estimator = core.createEstimator()
  return Object.fromEntries(
    Object.entries(PROMPTS).map(([name, messages]) => [name, estimator.countPromptTokens(messages)]),
  )
}

module.exports = { PROMPTS, estimates }
