/**
 * The chat page in a real browser (Debian's Chromium, headless, driven by playwright-core): a
 * message streams in, the quota panel moves, and a burst meets a refusal whose countdown retries by
 * itself. Quotas here use a one-second window (rps) so refusals last under a second and the whole
 * suite stays short; the demo's own quotas are per minute.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type RunningApp } from './start-app.js'

const CHROMIUM = '/usr/bin/chromium'
const hasChromium = existsSync(CHROMIUM)
const SCREENSHOT = resolve(process.cwd(), 'test-results/chat-backend.png')

if (!hasChromium) {
  if (process.env.CI === 'true') {
    describe('chat page in Chromium', () => {
      it('needs Chromium at /usr/bin/chromium under CI=true', () => {
        throw new Error(`CI=true but ${CHROMIUM} is missing: .ci/run installs the chromium package`)
      })
    })
  } else {
    console.warn(`\n[chat-backend] ${CHROMIUM} not found: the browser test is SKIPPED (apt-get install chromium to run it)\n`)
  }
}

describe.skipIf(!hasChromium)('chat page in Chromium', () => {
  let running: RunningApp
  let browser: Browser
  let page: Page
  const pageErrors: string[] = []

  beforeAll(async () => {
    running = await startApp({
      // Short answers that still take visible time to stream (~20 tokens/s would be too slow here).
      simulator: { ttftMs: 150, perTokenMs: 8 },
      app: { quotas: { browser: { rpm: 60, rps: 3, tpm: 60_000, concurrency: 4 } } },
    })
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
    page = await browser.newPage({ viewport: { width: 1280, height: 960 } })
    page.on('pageerror', (error) => pageErrors.push(error.message))
  })

  afterAll(async () => {
    await browser?.close()
    await running?.close()
  })

  const remaining = (dimension: string) =>
    page.locator(`.meter[data-dimension="${dimension}"] .remaining`).textContent().then((text) => Number(text?.replace(/\D/g, '')))

  it('streams an answer token by token and updates the quota panel', async () => {
    await page.goto(running.url)
    await page.locator('.meter[data-dimension="rpm"]').waitFor()
    expect(await remaining('rpm')).toBe(60)
    await expect(page.locator('#backend-label').textContent()).resolves.toBe('embedded simulator')

    await page.fill('#input', 'How does qwen-guard keep me under the rate limit?')
    await page.press('#input', 'Enter')

    const answer = page.locator('.msg.assistant').last()
    // The typing indicator shows before the first token arrives.
    await answer.locator('.typing').waitFor({ state: 'visible' })

    // Sample the text while it streams: it must be seen at several growing lengths.
    const lengths: number[] = []
    const textEl = answer.locator('.text')
    for (let i = 0; i < 100; i++) {
      const state = await answer.getAttribute('data-state')
      const length = (await textEl.textContent())?.length ?? 0
      if (length > 0 && length !== lengths.at(-1)) lengths.push(length)
      if (state === 'done') break
      await page.waitForTimeout(40)
    }
    await page.waitForSelector('.msg.assistant[data-state="done"]')
    expect(lengths.length).toBeGreaterThanOrEqual(3)
    expect(lengths).toEqual([...lengths].sort((a, b) => a - b))

    await expect(answer.locator('.badge.model').textContent()).resolves.toMatch(/^qwen/)
    await expect(answer.locator('.msg-foot').textContent()).resolves.toMatch(/tokens/)
    // The panel refreshes after the answer: one request of the minute is spent.
    await page.waitForFunction(() => document.querySelector('.meter[data-dimension="rpm"] .remaining')?.textContent === '59')
    expect(await remaining('tpm')).toBeLessThan(60_000)
  })

  it('shows a burst: a refusal counts down, retries by itself and then succeeds', async () => {
    await page.click('#burst')
    const rows = page.locator('#burst-list .burst-row')
    await expect(rows.count()).resolves.toBe(12)

    // At three requests a second, most of the twelve are refused at first, each with its countdown.
    await page.locator('.burst-row[data-state="refused"] .countdown').first().waitFor({ state: 'visible', timeout: 10_000 })

    await page.waitForFunction(() => document.querySelectorAll('#burst-list .burst-row[data-done="true"]').length === 12, null, { timeout: 30_000 })
    const outcomes = await rows.evaluateAll((els) =>
      els.map((el) => ({ state: (el as HTMLElement).dataset.state, refusals: Number((el as HTMLElement).dataset.refusals ?? 0) })),
    )
    const served = new Set(['admitted', 'queued', 'fallback'])
    expect(outcomes.every((o) => served.has(o.state ?? ''))).toBe(true)
    expect(outcomes.some((o) => o.refusals > 0)).toBe(true)
    await expect(page.locator('#burst-summary').textContent()).resolves.toMatch(/^12\/12 served/)

    mkdirSync(dirname(SCREENSHOT), { recursive: true })
    await page.screenshot({ path: SCREENSHOT })
    console.log(`[chat-backend] screenshot: ${SCREENSHOT}`)
    expect(pageErrors).toEqual([])
  })
})
