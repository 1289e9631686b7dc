/**
 * The chat page in a real browser (Debian's Chromium, headless, driven by playwright-core), judged
 * by what a person sees, not by what is in the DOM:
 *
 * - while an answer streams, the quota panel moves (a concurrency lease in use, tokens reserved)
 *   and then settles back;
 * - a burst's rows each tell their whole story (refusals and the wait each asked for, retries,
 *   queue time, total time, the model that served it), all twelve rows on screen at 1280x860;
 * - the upstream usage chart (guard.usageReport()) shows a bar per minute under the limit line;
 * - a refusal's reason and its "Retrying in N s" countdown are on screen (inside the viewport, not
 *   hidden, not clipped by the chat pane's fold, not covered) when they appear and all the while
 *   they count down, at 1280x860 and at a phone's 390x844.
 *
 * Two apps: one with a one-second request window (rps) so a burst's refusals last under a second
 * and the burst ends quickly, one with two requests a minute so a refusal's countdown lasts long
 * enough to watch. Screenshots go to test-results/ at the repository root.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type RunningApp } from './start-app.js'
import { VISIBILITY_PROBE } from './visibility-probe.js'

const CHROMIUM = '/usr/bin/chromium'
const hasChromium = existsSync(CHROMIUM)
const RESULTS = resolve(dirname(fileURLToPath(import.meta.url)), '../../../test-results')
const WIDE = { width: 1280, height: 860 }
const NARROW = { width: 390, height: 844 }

if (!hasChromium) {
  if (process.env.CI === 'true') {
    describe('chat page in Chromium', () => {
      it('needs Chromium at /usr/bin/chromium under CI=true', () => {
        throw new Error(`CI=true but ${CHROMIUM} is missing: .ci/run installs the chromium package`)
      })
    })
  } else {
    console.warn(
      `\n[chat-backend] ${CHROMIUM} not found: the browser test is SKIPPED (apt-get install chromium to run it)\n`,
    )
  }
}

describe.skipIf(!hasChromium)('chat page in Chromium', () => {
  /** One-second request window: refusals last under a second, a burst of twelve ends in a few seconds. */
  let fast: RunningApp
  /** Two requests a minute: the third question is refused with a countdown of about a minute. */
  let tight: RunningApp
  let browser: Browser
  const pageErrors: string[] = []

  beforeAll(async () => {
    ;[fast, tight] = await Promise.all([
      startApp({
        // Answers long enough (160 tokens at 12 ms) for the panel to be seen mid-stream, short enough for a quick suite.
        simulator: { ttftMs: 150, perTokenMs: 12 },
        app: { quotas: { browser: { rpm: 60, rps: 3, tpm: 60_000, concurrency: 4 } } },
      }),
      startApp({
        simulator: { ttftMs: 60, perTokenMs: 3 },
        app: { quotas: { browser: { rpm: 2, tpm: 60_000, concurrency: 4 } } },
      }),
    ])
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    mkdirSync(RESULTS, { recursive: true })
  })

  afterAll(async () => {
    await browser?.close()
    await Promise.all([fast?.close(), tight?.close()])
    expect(pageErrors).toEqual([])
  })

  /** A fresh browser profile (a new demo user) at `viewport`, with the visibility probe installed. */
  async function openPage(app: RunningApp, viewport: { width: number; height: number }): Promise<Page> {
    const context = await browser.newContext({ viewport })
    await context.addInitScript({ content: VISIBILITY_PROBE })
    const page = await context.newPage()
    page.on('pageerror', (error) => pageErrors.push(error.message))
    await page.goto(app.url)
    await page.locator('.meter[data-dimension="rpm"]').waitFor()
    return page
  }

  const whyNotSeen = (page: Page, selector: string) =>
    page.evaluate((s) => window.whyNotSeen(document.querySelector(s)), selector)

  async function ask(page: Page, text: string): Promise<void> {
    await page.fill('#input', text)
    await page.press('#input', 'Enter')
  }

  const lastAnswerState = (page: Page) =>
    page.evaluate(() => [...document.querySelectorAll<HTMLElement>('.msg.assistant')].at(-1)?.dataset.state)

  async function screenshot(page: Page, name: string): Promise<void> {
    const path = resolve(RESULTS, name)
    await page.screenshot({ path })
    console.log(`[chat-backend] screenshot: ${path}`)
  }

  it('streams an answer token by token while the quota panel shows the lease in use and the tokens reserved', async () => {
    const page = await openPage(fast, WIDE)
    await expect(page.locator('#backend-label').textContent()).resolves.toBe('embedded simulator')
    await expect(page.locator('.meter[data-dimension="concurrency"]').getAttribute('data-remaining')).resolves.toBe('4')

    // Every change of the panel, with the state of the answer at that moment, recorded in the page.
    await page.evaluate(() => {
      const samples: Array<Record<string, string | undefined>> = []
      ;(window as unknown as { panelSamples: typeof samples }).panelSamples = samples
      const meters = document.querySelector<HTMLElement>('#quota-meters')!
      new MutationObserver(() => {
        const meter = (d: string) => meters.querySelector<HTMLElement>(`.meter[data-dimension="${d}"]`)
        samples.push({
          answer: [...document.querySelectorAll<HTMLElement>('.msg.assistant')].at(-1)?.dataset.state,
          concurrency: meter('concurrency')?.dataset.remaining,
          concurrencyText: meter('concurrency')?.querySelector('.meter-reset')?.textContent ?? undefined,
          tpm: meter('tpm')?.dataset.remaining,
          tpmReserved: meter('tpm')?.dataset.reserved,
          tpmText: meter('tpm')?.querySelector('.meter-reset')?.textContent ?? undefined,
          reserved: meters.dataset.reserved,
          streaming: meters.dataset.streaming,
        })
      }).observe(meters, { childList: true, subtree: true, attributes: true })
    })

    // And the answer's states and text lengths as the page shows them, recorded in the page too.
    await page.evaluate(() => {
      const seen = { states: [] as string[], lengths: [] as number[], typingShown: false }
      ;(window as unknown as { answerSeen: typeof seen }).answerSeen = seen
      new MutationObserver(() => {
        const answer = [...document.querySelectorAll<HTMLElement>('.msg.assistant')].at(-1)
        if (!answer) return
        const state = answer.dataset.state ?? ''
        if (state !== seen.states.at(-1)) seen.states.push(state)
        if (state === 'waiting') seen.typingShown ||= window.whyNotSeen(answer.querySelector('.typing')) === null
        const length = answer.querySelector('.text')?.textContent?.length ?? 0
        if (length > 0 && length !== seen.lengths.at(-1)) seen.lengths.push(length)
      }).observe(document.querySelector('#messages')!, {
        childList: true,
        subtree: true,
        attributes: true,
        characterData: true,
      })
    })

    await ask(page, 'How does qwen-guard keep me under the rate limit?')
    const answer = page.locator('.msg.assistant').last()
    // Mid-stream: the panel says one answer is streaming, and it is on screen.
    await page.waitForFunction(
      () =>
        document.querySelector<HTMLElement>('#quota-meters')?.dataset.streaming === '1' &&
        document.querySelector<HTMLElement>('.msg.assistant')?.dataset.state === 'streaming',
      null,
      { timeout: 10_000, polling: 50 },
    )
    expect(await whyNotSeen(page, '.meter[data-dimension="concurrency"]')).toBeNull()
    expect(await whyNotSeen(page, '.meter[data-dimension="tpm"]')).toBeNull()
    await screenshot(page, 'chat-backend-streaming.png')
    await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 15_000 })

    const seen = await page.evaluate(
      () =>
        (window as unknown as { answerSeen: { states: string[]; lengths: number[]; typingShown: boolean } }).answerSeen,
    )
    // A typing indicator first, then the text at several growing lengths.
    expect(seen.states).toEqual(['waiting', 'streaming', 'done'])
    expect(seen.typingShown).toBe(true)
    expect(seen.lengths.length).toBeGreaterThanOrEqual(3)
    expect(seen.lengths).toEqual([...seen.lengths].sort((a, b) => a - b))
    await expect(answer.locator('.badge.model').textContent()).resolves.toMatch(/^qwen/)
    await expect(answer.locator('.msg-foot').textContent()).resolves.toMatch(/tokens/)
    expect(await whyNotSeen(page, '.msg.assistant:last-of-type .msg-foot')).toBeNull()

    // After the answer the panel settles: the lease is back, nothing reserved, one request spent.
    await page.waitForFunction(
      () => {
        const meters = document.querySelector<HTMLElement>('#quota-meters')!
        const remaining = (d: string) =>
          meters.querySelector<HTMLElement>(`.meter[data-dimension="${d}"]`)?.dataset.remaining
        return remaining('concurrency') === '4' && remaining('rpm') === '59' && meters.dataset.reserved === '0'
      },
      null,
      { timeout: 10_000 },
    )
    const samples = await page.evaluate(
      () => (window as unknown as { panelSamples: Array<Record<string, string | undefined>> }).panelSamples,
    )
    // Mid-stream, the panel showed this answer holding one of the four leases and its reserved tokens.
    const midStream = samples.filter((s) => s.answer === 'streaming')
    expect(midStream.length, 'panel updates seen while the answer streamed').toBeGreaterThan(0)
    const moving = midStream.find((s) => s.concurrency === '3' && Number(s.reserved) > 0)
    expect(moving, JSON.stringify(samples)).toBeDefined()
    expect(moving!.concurrencyText).toBe('1 streaming')
    expect(Number(moving!.tpmReserved)).toBeGreaterThan(0)
    expect(moving!.tpmText).toMatch(/^[\d,]+ reserved now$/)
    expect(Number(moving!.tpm)).toBeLessThan(60_000)
    await screenshot(page, 'chat-backend-streamed.png')
    await page.context().close()
  })

  it('a burst: twelve rows on screen, each telling its story (refusals and waits, retries, queue, total, model)', async () => {
    const page = await openPage(fast, WIDE)
    await page.click('#burst')
    const rows = page.locator('#burst-list .burst-row')
    await expect(rows.count()).resolves.toBe(12)

    // At three requests a second most of the twelve are refused at first, each counting down in view.
    await page
      .locator('.burst-row[data-state="refused"] .countdown')
      .first()
      .waitFor({ state: 'visible', timeout: 10_000 })
    expect(await whyNotSeen(page, '.burst-row[data-state="refused"] .countdown')).toBeNull()
    // A waiting row's total counts up while it waits.
    const refusedRow = page.locator('.burst-row[data-state="refused"]').first()
    const totalBefore = Number(await refusedRow.getAttribute('data-total-ms'))
    await expect
      .poll(async () => Number(await refusedRow.getAttribute('data-total-ms')), { timeout: 5_000 })
      .toBeGreaterThan(totalBefore)

    await page.waitForFunction(
      () => document.querySelectorAll('#burst-list .burst-row[data-done="true"]').length === 12,
      null,
      { timeout: 60_000 },
    )
    await expect(page.locator('#burst-summary').textContent()).resolves.toMatch(
      /^12\/12 served · \d+ by a fallback · \d+ refused then retried · all done in [\d.]+ s$/,
    )

    const stories = await rows.evaluateAll((els) =>
      els.map((el) => {
        const row = el as HTMLElement
        const cell = (c: string) => row.querySelector(c)?.textContent?.trim() ?? ''
        return {
          seen: window.whyNotSeen(row),
          outcome: row.dataset.outcome,
          refusals: Number(row.dataset.refusals),
          retries: Number(row.dataset.retries),
          waitedMs: Number(row.dataset.waitedMs),
          queuedMs: Number(row.dataset.queuedMs),
          totalMs: Number(row.dataset.totalMs),
          outcomeText: cell('.burst-outcome'),
          refusedText: cell('.burst-refused'),
          queuedText: cell('.burst-queued'),
          totalText: cell('.burst-total'),
          title: row.title,
        }
      }),
    )
    expect(await whyNotSeen(page, '#burst-list .burst-head')).toBeNull()
    for (const [i, story] of stories.entries()) {
      const where = `row ${i + 1}: ${JSON.stringify(story)}`
      expect(story.seen, where).toBeNull()
      expect(['served', 'fallback'], where).toContain(story.outcome)
      expect(story.outcomeText, where).toMatch(/qwen[\w.-]*/)
      // Every refusal was waited out and retried; the row says how many and how long they asked to wait.
      expect(story.retries, where).toBe(story.refusals)
      if (story.refusals > 0) {
        expect(story.waitedMs, where).toBeGreaterThan(0)
        expect(story.refusedText, where).toMatch(new RegExp(`^${story.refusals}× · [\\d.]+ s$`))
        expect(story.outcomeText, where).toMatch(new RegExp(`try\\s${story.refusals + 1}$`))
        expect(story.title, where).toMatch(/try 1 refused \(.+\), told to wait [\d.]+ s, retried/)
        // The total covers the waits it sat out.
        expect(story.totalMs, where).toBeGreaterThanOrEqual(story.waitedMs)
      } else {
        expect(story.refusedText, where).toBe('–')
      }
      expect(story.queuedText, where).toEqual(story.queuedMs >= 50 ? expect.stringMatching(/^[\d.]+ (ms|s)$/) : '–')
      expect(story.title, where).toMatch(
        /served by qwen[\w.-]* (\(a fallback: qwen3-max was busy\) )?on try \d+; total [\d.]+ s$/,
      )
      expect(story.totalText, where).toMatch(/^[\d.]+ s$/)
      expect(story.totalMs, where).toBeGreaterThan(0)
    }
    expect(stories.filter((s) => s.refusals > 0).length).toBeGreaterThan(0)
    // The panel ends on fresh numbers, not on a poll answered while the last answer still streamed
    // (the periodic refresh, every 5 s, would hide that: the wait is shorter).
    await page.waitForFunction(
      () => {
        const meters = document.querySelector<HTMLElement>('#quota-meters')!
        return (
          meters.dataset.streaming === '0' &&
          meters.dataset.waiting === '0' &&
          meters.querySelector<HTMLElement>('.meter[data-dimension="concurrency"]')?.dataset.remaining === '4'
        )
      },
      null,
      { timeout: 4_000 },
    )
    await screenshot(page, 'chat-backend-burst.png')
    await page.context().close()
  })

  it('the upstream usage chart: per account x model, a bar per minute and the limit line, on screen', async () => {
    const page = await openPage(fast, WIDE)
    await ask(page, 'A question for the usage chart')
    await expect.poll(() => lastAnswerState(page), { timeout: 15_000 }).toBe('done')
    // The page asks for the report when a call ends: a lane with a bar appears.
    const plot = '#usage-chart .usage-lane .usage-plot[data-figure="requests"]'
    await page.locator(`${plot} .usage-bar`).first().waitFor({ timeout: 10_000 })
    await page.locator('#usage-card').scrollIntoViewIfNeeded() // the side column scrolls, as a person would
    expect(await whyNotSeen(page, `${plot} svg`)).toBeNull()
    expect(await whyNotSeen(page, `${plot} .usage-limit`)).toBeNull()
    expect(await whyNotSeen(page, `${plot} .usage-bar`)).toBeNull()
    expect(await whyNotSeen(page, `${plot} figcaption`)).toBeNull()
    // The bar is at least the one answer just given, under the line of the limit the caption names.
    const figures = await page.evaluate((selector) => {
      const figure = document.querySelector(selector)!
      const bar = figure.querySelector('.usage-bar')!.getBoundingClientRect()
      const limit = figure.querySelector<SVGElement>('.usage-limit')!
      return {
        bar: Number(figure.querySelector<SVGElement>('.usage-bar')!.dataset.value),
        limit: Number(limit.dataset.value),
        caption: figure.querySelector('figcaption')!.textContent,
        barTop: bar.top,
        limitTop: limit.getBoundingClientRect().top,
      }
    }, plot)
    expect(figures.bar).toBeGreaterThanOrEqual(1)
    expect(figures.limit).toBeGreaterThan(figures.bar)
    expect(figures.caption).toBe(`requests / min: peak ${figures.bar} · limit ${figures.limit}`)
    expect(figures.limitTop).toBeLessThan(figures.barTop) // the line above the bar
    await expect(page.locator('#usage-chart .usage-lane h3').first().textContent()).resolves.toMatch(
      / · account 1$/, // never the server's account id
    )
    await screenshot(page, 'chat-backend-usage.png')
    await page.context().close()
  })

  for (const viewport of [WIDE, NARROW]) {
    it(`a refusal's reason and countdown are on screen at ${viewport.width}x${viewport.height} and stay there while it counts down`, async () => {
      const page = await openPage(tight, viewport)
      // Two answers fill the chat pane, so the refusal lands where the fold used to cut it off.
      for (const question of [
        'First question: explain rate limits in detail',
        'Second question: and the fair queue?',
      ]) {
        await ask(page, question)
        await expect.poll(() => lastAnswerState(page), { timeout: 15_000 }).toBe('done')
      }
      await ask(page, 'Third question: this one is over the quota')
      await expect.poll(() => lastAnswerState(page), { timeout: 15_000 }).toBe('refused')

      const reason = '.msg.assistant:last-of-type .refusal-reason'
      const count = '.msg.assistant:last-of-type .refusal-count'
      await expect(page.locator(reason).textContent()).resolves.toBe('Your requests for this minute are used up.')
      expect(await whyNotSeen(page, reason)).toBeNull()
      expect(await whyNotSeen(page, count)).toBeNull()
      expect(await whyNotSeen(page, '.msg.assistant:last-of-type .progress')).toBeNull()
      await screenshot(page, `chat-backend-refusal-${viewport.width}x${viewport.height}.png`)

      // Watched for a while as it ticks: always in view, and the number moves (about a minute to go).
      const watched = await page.evaluate(
        async ({ reason, count }) => {
          const samples: Array<{ value: string; seen: string | null }> = []
          const until = performance.now() + 1_600
          while (performance.now() < until) {
            const value = document.querySelector(`${count} .countdown`)?.textContent ?? ''
            samples.push({
              value,
              seen:
                window.whyNotSeen(document.querySelector(reason)) ?? window.whyNotSeen(document.querySelector(count)),
            })
            await new Promise((r) => setTimeout(r, 100))
          }
          return samples
        },
        { reason, count },
      )
      expect(watched.filter((s) => s.seen !== null)).toEqual([])
      const values = [...new Set(watched.map((s) => Number(s.value)))]
      expect(values.length).toBeGreaterThanOrEqual(2)
      expect(Math.max(...values)).toBeLessThanOrEqual(60)
      expect(Math.min(...values)).toBeGreaterThan(0)
      await page.context().close()
    })
  }
})
