// The compare bench's offered load: one seeded schedule of arrivals, replayed identically for every
// strategy. Open loop: a user's next question comes at its scheduled moment whether or not the
// previous one was answered (what 30 people typing into a chat page do).

import { seededRandom } from '../packages/simulator/src/random.js'

/** The simulator's seeded generator (mulberry32), so a schedule is the same on every run. */
export const seeded = seededRandom

export interface Arrival {
  /** Index in the schedule. */
  id: number
  /** Real ms after the start of the run. */
  at: number
  user: string
  language: 'en' | 'zh'
  content: string
  maxTokens: number
}

const EN_WORDS = (
  'the quota account model request answer token limit minute second window user guard retry queue ' +
  'please explain how this works with an example and keep it short what why when where summary list ' +
  'translate write code function error stream latency budget plan travel recipe weather history'
).split(' ')
// Common Han characters (the simulator counts 2/3 token each, about 1.5 characters per token).
const ZH_CHARS = '请解释这个问题的原因并给出一个简单例子我们需要翻译总结写代码旅行计划天气历史模型限制用户回答时间'

/** Prompt sizes in (approximate) tokens and answer caps: short chat turns to long answers. The largest
 * call (about 1,480 tokens) fits the 1 s token window of 100,000 TPM (1,667 tokens): no call is one
 * that no strategy could ever get accepted. */
const PROMPT_TOKENS = [20, 40, 80, 150, 300, 450]
const MAX_TOKENS = [32, 64, 128, 256, 512, 1_024]

function text(rand: () => number, language: 'en' | 'zh', tokens: number): string {
  if (language === 'zh') {
    const chars = Math.round(tokens * 1.5)
    let out = ''
    for (let i = 0; i < chars; i++) out += ZH_CHARS[Math.floor(rand() * ZH_CHARS.length)]
    return out
  }
  const words: string[] = []
  for (let i = 0; i < tokens; i++) words.push(EN_WORDS[Math.floor(rand() * EN_WORDS.length)] as string)
  return words.join(' ')
}

export interface ScheduleOptions {
  seed: number
  users: number
  /** Arrivals per real second over all users (Poisson). */
  ratePerSecond: number
  /** Arrivals are scheduled in [0, loadMs). */
  loadMs: number
}

/** Poisson arrivals per user, merged and sorted by time; 60 % English, 40 % Chinese. */
export function makeSchedule(o: ScheduleOptions): Arrival[] {
  const rand = seeded(o.seed)
  const perUser = o.ratePerSecond / o.users
  const out: Omit<Arrival, 'id'>[] = []
  for (let u = 0; u < o.users; u++) {
    let t = (-Math.log(1 - rand()) / perUser) * 1000
    while (t < o.loadMs) {
      const language = rand() < 0.6 ? 'en' : 'zh'
      const tokens = PROMPT_TOKENS[Math.floor(rand() * PROMPT_TOKENS.length)] as number
      const maxTokens = MAX_TOKENS[Math.floor(rand() * MAX_TOKENS.length)] as number
      out.push({
        at: t,
        user: `user-${String(u).padStart(2, '0')}`,
        language,
        content: text(rand, language, tokens),
        maxTokens,
      })
      t += (-Math.log(1 - rand()) / perUser) * 1000
    }
  }
  out.sort((a, b) => a.at - b.at)
  return out.map((a, id) => ({ ...a, id }))
}
