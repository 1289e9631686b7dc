// The demo chat page: plain browser JavaScript, no build step. It talks to three endpoints:
//   POST /api/chat   -> an SSE stream (meta, delta..., done | error), or 429/503 + Retry-After
//   GET  /api/quota  -> the demo user's quota from guard.state()
//   /v1              -> the OpenAI-compatible relay (only advertised here)

const BURST_SIZE = 12
/** Refusals a burst row sits out before giving up (a row waits whatever the server says each time). */
const BURST_MAX_RETRIES = 30

const $ = (selector, root = document) => root.querySelector(selector)

const els = {
  messages: $('#messages'),
  welcome: $('#welcome'),
  form: $('#composer'),
  input: $('#input'),
  send: $('#send'),
  meters: $('#quota-meters'),
  quotaCard: $('#quota-card'),
  backend: $('#backend-label'),
  backendPill: $('#backend-pill'),
  user: $('#user-label'),
  burst: $('#burst'),
  burstClear: $('#burst-clear'),
  burstList: $('#burst-list'),
  burstSummary: $('#burst-summary'),
  relayUrl: $('#relay-url'),
  route: $('#route-label'),
}

/** The visible conversation, sent with every question (the server keeps the recent turns). */
const history = []
let chatBusy = false

// ---------------------------------------------------------------------------------------------
// Talking to the server

/** Reads our SSE framing (`event:` + one JSON `data:` line) from a fetch response. */
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      let event = 'message'
      let data = ''
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim()
        else if (line.startsWith('data:')) data += line.slice(5).trim()
      }
      if (data) yield { event, data: JSON.parse(data) }
    }
  }
}

/** The wait a refusal asks for: `retry-after-ms` when present (exact), else `Retry-After` seconds. */
function retryWaitMs(response) {
  const ms = Number(response.headers.get('retry-after-ms'))
  if (Number.isFinite(ms) && ms > 0) return ms
  const seconds = Number(response.headers.get('retry-after'))
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 1000
}

/**
 * Which limit refused us, from the IETF `RateLimit` field the guard sends, e.g.
 * `"user-rpm";r=0;t=14, "user-tpm";r=3200;t=14`: the item with nothing remaining.
 */
function blockingDimension(header) {
  if (!header) return undefined
  for (const item of header.split(',')) {
    const name = /"([^"]+)"/.exec(item)?.[1]
    const remaining = /;r=(\d+)/.exec(item)?.[1]
    if (name && remaining === '0') {
      const label = name.slice(name.indexOf('-') + 1) // "<scope>-<dimension>"
      return { 'tokens-per-day': 'tokensPerDay', 'usd-per-day': 'usdPerDay' }[label] ?? label
    }
  }
  return undefined
}

/**
 * Calls /api/chat and reports what happens through `hooks`; waits out refusals and retries. While
 * any call is in progress the quota panel polls the server, so it moves while answers stream.
 */
async function chat(body, hooks, options) {
  callStarted()
  try {
    return await chatAttempts(body, hooks, options)
  } finally {
    callEnded()
  }
}

async function chatAttempts(body, hooks, { maxRetries = Infinity } = {}) {
  for (let attempt = 0; ; attempt++) {
    const sentAt = performance.now()
    const response = await fetch('/api/chat', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    if (response.status === 429 || response.status === 503) {
      const waitMs = retryWaitMs(response)
      const payload = await response.json().catch(() => null)
      const error = payload?.error ?? {}
      const retryable = response.headers.get('x-should-retry') !== 'false'
      if (!retryable || attempt >= maxRetries) {
        hooks.failed?.(error.message ?? `refused (${response.status})`)
        return { ok: false, attempts: attempt + 1 }
      }
      const dimension = blockingDimension(response.headers.get('ratelimit'))
      // Set by the demo's server when the call waited in the guard's queue before it was refused.
      const queued = Number(response.headers.get('x-demo-queued-ms'))
      const queuedMs = response.headers.has('x-demo-queued-ms') && Number.isFinite(queued) ? queued : 0
      await hooks.refused?.({
        waitMs,
        code: error.code ?? 'rate_limited',
        dimension,
        message: error.message ?? 'Rate limited',
        attempt,
        queuedMs,
        heldMs: performance.now() - sentAt,
      })
      continue
    }
    if (!response.ok) {
      const payload = await response.json().catch(() => null)
      hooks.failed?.(payload?.error?.message ?? `HTTP ${response.status}`)
      return { ok: false, attempts: attempt + 1 }
    }
    for await (const { event, data } of readEvents(response)) {
      if (event === 'meta') hooks.meta?.(data)
      else if (event === 'delta') hooks.delta?.(data.text)
      else if (event === 'done') hooks.done?.(data)
      else if (event === 'error') hooks.failed?.(data.message)
    }
    return { ok: true, attempts: attempt + 1 }
  }
}

/** Counts `ms` down, calling `tick(secondsLeft, fractionDone)` about ten times a second. */
function countdown(ms, tick) {
  const end = performance.now() + ms
  return new Promise((resolve) => {
    const step = () => {
      const left = end - performance.now()
      if (left <= 0) {
        tick(0, 1)
        resolve()
        return
      }
      tick(Math.ceil(left / 1000), 1 - left / ms)
      setTimeout(step, Math.min(100, left))
    }
    step()
  })
}

// ---------------------------------------------------------------------------------------------
// Formatting

const DIMENSIONS = {
  rpm: { label: 'Requests', unit: 'per minute' },
  rps: { label: 'Requests', unit: 'per second' },
  tpm: { label: 'Tokens', unit: 'per minute' },
  tps: { label: 'Tokens', unit: 'per second' },
  concurrency: { label: 'In flight', unit: 'at once' },
  tokensPerDay: { label: 'Tokens today', unit: 'per day' },
  usdPerDay: { label: 'Spend today', unit: 'USD per day' },
}
const DIMENSION_ORDER = ['rpm', 'rps', 'tpm', 'tps', 'concurrency', 'tokensPerDay', 'usdPerDay']

const number = new Intl.NumberFormat('en')
const formatSeconds = (ms) => (ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`)
/** A reset time: seconds under two minutes, then minutes, then hours and minutes. */
function formatWait(ms) {
  const seconds = Math.ceil(ms / 1000)
  if (seconds < 120) return `${seconds} s`
  const minutes = Math.ceil(seconds / 60)
  if (minutes < 120) return `${minutes} min`
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
}
const formatWindow = (seconds) =>
  seconds >= 86_400 && seconds % 86_400 === 0 ? 'daily' : seconds >= 3600 ? `${seconds / 3600} h` : `${seconds} s`
const formatMs = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : formatSeconds(ms))

/** Short, human reasons for the guard's error codes. */
const REASONS = {
  rate_limit_exceeded: 'You hit your request or token rate limit',
  concurrency_limit_exceeded: 'Too many of your requests are in flight',
  upstream_saturated: 'Qwen capacity is busy right now',
  queue_full: 'The wait queue is full',
  upstream_unavailable: 'Qwen is unavailable',
  quota_exceeded: 'Daily quota used up',
}
const DIMENSION_REASONS = {
  rpm: 'Your requests for this minute are used up',
  rps: 'Too many requests this second',
  tpm: 'Your tokens for this minute are used up',
  tps: 'Too many tokens this second',
  tokensPerDay: "Today's tokens are used up",
  usdPerDay: "Today's budget is used up",
  concurrency: 'Too many of your requests are in flight',
}
const reasonFor = (code, message, dimension) => DIMENSION_REASONS[dimension] ?? REASONS[code] ?? message
/** The same, in a couple of words, for the narrow burst rows. */
const SHORT_DIMENSIONS = {
  rpm: 'rpm',
  rps: 'rps',
  tpm: 'tpm',
  tps: 'tps',
  tokensPerDay: 'daily',
  usdPerDay: 'budget',
  concurrency: 'in flight',
}
const SHORT_REASONS = {
  rate_limit_exceeded: 'your quota',
  concurrency_limit_exceeded: 'in flight',
  upstream_saturated: 'upstream busy',
  queue_full: 'queue full',
  upstream_unavailable: 'upstream down',
  quota_exceeded: 'daily quota',
}

// ---------------------------------------------------------------------------------------------
// Quota panel

/** The last panel data and when it was fetched, so resets can count down between fetches. */
let quota = null
let quotaFetchedAt = 0
let quotaRefresh = null
let quotaFetching = false
/** A refresh asked for while one was in flight: run once more after it, so the panel ends on fresh numbers. */
let quotaAgain = false

/** How often the panel asks the server while a call of this page is in progress. */
const LIVE_POLL_MS = 500
let callsInProgress = 0
let livePoll = null

function callStarted() {
  callsInProgress++
  if (livePoll === null) {
    els.quotaCard.dataset.live = 'true'
    scheduleQuotaRefresh()
    livePoll = setInterval(() => scheduleQuotaRefresh(), LIVE_POLL_MS)
  }
}

function callEnded() {
  callsInProgress--
  if (callsInProgress > 0) return
  clearInterval(livePoll)
  livePoll = null
  delete els.quotaCard.dataset.live
  scheduleQuotaRefresh()
  refreshUsage()
}

async function refreshQuota() {
  if (quotaFetching) {
    // One request at a time (a slow server must not pile up polls), but the answer in flight may
    // predate what this refresh was asked for (a call that just ended): fetch again after it.
    quotaAgain = true
    return
  }
  quotaFetching = true
  quotaAgain = false
  try {
    const response = await fetch('/api/quota', { cache: 'no-store' })
    if (!response.ok) return
    quota = await response.json()
    quotaFetchedAt = performance.now()
    els.user.textContent = quota.user
    const simulated = quota.backend === 'simulator'
    els.backend.textContent = simulated ? 'embedded simulator' : 'Qwen (DashScope)'
    els.backendPill.dataset.backend = quota.backend
    els.route.textContent = [quota.model.requested, ...quota.model.fallback].join(' → ')
    renderQuota()
  } catch {
    // The server is restarting or gone; the next answer or the periodic refresh tries again.
  } finally {
    quotaFetching = false
    if (quotaAgain) scheduleQuotaRefresh()
  }
}

/** Coalesces refreshes: several answers finishing together cause one request. */
function scheduleQuotaRefresh(delay = 0) {
  clearTimeout(quotaRefresh)
  quotaRefresh = setTimeout(refreshQuota, delay)
}

function renderQuota() {
  if (!quota) return
  const elapsed = performance.now() - quotaFetchedAt
  const limits = [...quota.limits].sort(
    (a, b) => DIMENSION_ORDER.indexOf(a.dimension) - DIMENSION_ORDER.indexOf(b.dimension),
  )
  const live = quota.live ?? { waiting: 0, streaming: 0, reservedTokens: 0 }
  if (limits.length === 0) {
    els.meters.innerHTML = '<p class="muted small">No per-user limits configured.</p>'
    return
  }
  const rows = limits.map((limit) => {
    const info = DIMENSIONS[limit.dimension] ?? { label: limit.dimension, unit: '' }
    const remaining = Math.max(0, Math.floor(limit.remaining))
    const share = limit.limit > 0 ? Math.min(1, remaining / limit.limit) : 0
    const resetLeft = Math.max(0, limit.resetMs - elapsed)
    const level = share === 0 ? 'empty' : share < 0.34 ? 'low' : 'ok'
    // Tokens held for answers still streaming: part of what is not "left", given back if unused.
    const reserved =
      (limit.dimension === 'tpm' || limit.dimension === 'tps') && live.reservedTokens > 0
        ? Math.min(live.reservedTokens, limit.limit - remaining)
        : 0
    const reservedShare = limit.limit > 0 ? reserved / limit.limit : 0
    let reset
    if (limit.dimension === 'concurrency') {
      const parts = []
      if (live.streaming > 0) parts.push(`${live.streaming} streaming`)
      if (live.waiting > 0) parts.push(`${live.waiting} waiting`)
      const used = limit.limit - remaining
      reset = parts.length > 0 ? parts.join(' · ') : used > 0 ? `${used} in use` : 'none in use'
    } else if (reserved > 0) reset = `${number.format(reserved)} reserved now`
    else if (limit.resetMs <= 0 || remaining >= limit.limit)
      reset = `full · ${formatWindow(limit.windowSeconds)} window`
    else if (resetLeft <= 0) reset = 'resetting…'
    else reset = `resets in ${formatWait(resetLeft)}`
    return `
      <div class="meter" data-dimension="${limit.dimension}" data-level="${level}" data-remaining="${remaining}"${reserved > 0 ? ` data-reserved="${reserved}"` : ''}>
        <div class="meter-label">${info.label} <span class="muted">${info.unit}</span></div>
        <div class="meter-value"><strong class="remaining">${number.format(remaining)}</strong><span class="muted"> / ${number.format(limit.limit)} left</span></div>
        <div class="bar"><span style="width:${(share * 100).toFixed(1)}%"></span><i style="width:${(reservedShare * 100).toFixed(1)}%"></i></div>
        <div class="meter-reset muted small">${reset}</div>
      </div>`
  })
  els.meters.dataset.streaming = String(live.streaming)
  els.meters.dataset.waiting = String(live.waiting)
  els.meters.dataset.reserved = String(live.reservedTokens)
  els.meters.innerHTML = rows.join('')

  // A window that just ended: fetch the fresh numbers instead of showing "resetting…".
  if (limits.some((l) => l.resetMs > 0 && l.resetMs - elapsed <= -250 && l.remaining < l.limit)) scheduleQuotaRefresh(0)
}

// ---------------------------------------------------------------------------------------------
// Chat

function scrollToEnd() {
  els.messages.scrollTo({ top: els.messages.scrollHeight, behavior: 'instant' })
}

/** When the visitor last scrolled the conversation by hand: a countdown then stops pulling it back. */
let userScrolledAt = -Infinity
for (const type of ['wheel', 'touchmove']) {
  els.messages.addEventListener(type, () => (userScrolledAt = performance.now()), { passive: true })
}
els.messages.addEventListener('keydown', () => (userScrolledAt = performance.now()))

/**
 * Scrolls the conversation (and the page, when the pane itself is off screen) just enough for `el`
 * to be seen whole. Used for a refusal's reason and countdown, which must never sit below the fold.
 */
function reveal(el) {
  el.scrollIntoView({ block: 'nearest', inline: 'nearest', behavior: 'instant' })
}

/** Keeps `el` in view within the conversation pane while it updates, unless the visitor scrolled away since `since`. */
function keepInView(el, since) {
  if (userScrolledAt > since) return
  const pane = els.messages.getBoundingClientRect()
  const box = el.getBoundingClientRect()
  const margin = 12
  if (box.bottom > pane.bottom - margin)
    els.messages.scrollBy({ top: box.bottom - pane.bottom + margin, behavior: 'instant' })
  else if (box.top < pane.top + margin) els.messages.scrollBy({ top: box.top - pane.top - margin, behavior: 'instant' })
}

function addUserMessage(text) {
  els.welcome?.remove()
  const node = $('#tpl-user').content.firstElementChild.cloneNode(true)
  $('.text', node).textContent = text
  els.messages.append(node)
  scrollToEnd()
}

function addAssistantMessage() {
  const node = $('#tpl-assistant').content.firstElementChild.cloneNode(true)
  els.messages.append(node)
  scrollToEnd()
  return node
}

/** Marks which model answered, and whether it was a fallback or had to queue. */
function showModel(node, meta) {
  const model = $('.badge.model', node)
  model.textContent = meta.model
  model.hidden = false
  if (meta.fallback) {
    const mark = $('.badge.fallback', node)
    mark.textContent = `fallback · ${meta.requestedModel} was busy`
    mark.hidden = false
    node.classList.add('is-fallback')
  }
  if (meta.queuedMs >= 50) {
    const queued = $('.badge.queued', node)
    queued.textContent = `queued ${formatMs(meta.queuedMs)}`
    queued.hidden = false
  }
}

async function ask(text) {
  chatBusy = true
  updateComposer()
  history.push({ role: 'user', content: text })
  addUserMessage(text)
  const node = addAssistantMessage()
  const textEl = $('.text', node)
  const refusal = $('.refusal', node)
  let answer = ''
  let meta = null

  const result = await chat(
    { messages: history },
    {
      async refused({ waitMs, code, dimension, message }) {
        node.dataset.state = 'refused'
        refusal.hidden = false
        $('.refusal-reason', refusal).textContent = `${reasonFor(code, message, dimension)}.`
        const shownAt = performance.now()
        reveal(refusal)
        scheduleQuotaRefresh()
        await countdown(waitMs, (seconds, done) => {
          $('.countdown', refusal).textContent = String(seconds)
          $('.progress span', refusal).style.width = `${(done * 100).toFixed(1)}%`
          keepInView(refusal, shownAt)
        })
        refusal.hidden = true
        node.dataset.state = 'waiting'
        node.dataset.retried = String(Number(node.dataset.retried ?? 0) + 1)
      },
      meta(data) {
        meta = data
        showModel(node, data)
      },
      delta(chunk) {
        if (node.dataset.state !== 'streaming') node.dataset.state = 'streaming'
        answer += chunk
        textEl.textContent = answer
        scrollToEnd()
      },
      done(data) {
        node.dataset.state = 'done'
        const parts = []
        if (data.usage) parts.push(`${number.format(data.usage.total)} tokens`)
        parts.push(formatSeconds(data.elapsedMs))
        if (Number(node.dataset.retried ?? 0) > 0)
          parts.push(`after ${node.dataset.retried} wait${node.dataset.retried === '1' ? '' : 's'}`)
        $('.msg-foot', node).textContent = parts.join(' · ')
        scrollToEnd()
      },
      failed(message) {
        node.dataset.state = 'error'
        refusal.hidden = true
        textEl.textContent = answer ? `${answer}\n\n— ${message}` : message
      },
    },
  ).catch((error) => {
    node.dataset.state = 'error'
    textEl.textContent = `Could not reach the server (${error.message}).`
    return { ok: false }
  })

  if (result.ok && answer) history.push({ role: 'assistant', content: answer })
  else history.pop() // keep the conversation the model sees consistent with what it answered
  if (meta === null && node.dataset.state === 'waiting') node.dataset.state = 'done'
  chatBusy = false
  updateComposer()
  scheduleQuotaRefresh()
  els.input.focus()
}

function updateComposer() {
  els.send.disabled = chatBusy || els.input.value.trim() === ''
  els.form.classList.toggle('busy', chatBusy)
}

function autosize() {
  els.input.style.height = 'auto'
  els.input.style.height = `${Math.min(els.input.scrollHeight, 160)}px`
}

els.form.addEventListener('submit', (event) => {
  event.preventDefault()
  const text = els.input.value.trim()
  if (!text || chatBusy) return
  els.input.value = ''
  autosize()
  ask(text)
})
els.input.addEventListener('input', () => {
  autosize()
  updateComposer()
})
els.input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault()
    els.form.requestSubmit()
  }
})
for (const chip of document.querySelectorAll('#suggestions .chip')) {
  chip.addEventListener('click', () => {
    if (chatBusy) return
    ask(chip.textContent.trim())
  })
}

// ---------------------------------------------------------------------------------------------
// Burst

const BURST_PROMPTS = ['Say hi', 'Name a color', 'Count to three', 'Pick a fruit', 'One word for fast', 'A tiny fact']
let burstRunning = 0

/**
 * One row per request, with its whole story in columns: the outcome (live state, then the model
 * that served it and on which try), the refusals it met and the total wait they asked for (each
 * refusal is followed by a retry), the time it spent in the guard's queue over all its tries, and
 * its total time from the click to the last token.
 */
function burstRow(index) {
  const row = document.createElement('li')
  row.className = 'burst-row'
  row.dataset.state = 'pending'
  row.innerHTML = `<span class="burst-index">${String(index + 1).padStart(2, '0')}</span>
    <span class="burst-outcome"><span class="burst-state">sending</span></span>
    <span class="burst-refused">–</span>
    <span class="burst-queued">–</span>
    <span class="burst-total">0.0 s</span>
    <span class="burst-bar"><span></span></span>`
  return row
}

function burstHead() {
  const head = document.createElement('li')
  head.className = 'burst-head'
  head.setAttribute('aria-hidden', 'true')
  head.innerHTML = `<span>#</span><span>outcome</span>
    <span title="Refusals met (each one waited out, then retried) and the total wait they asked for (Retry-After)">refused, wait</span>
    <span title="Time in the guard's fair queue, all tries together">queued</span>
    <span title="From the click to the last token">total</span>`
  return head
}

function setRow(row, state, html) {
  row.dataset.state = state
  $('.burst-outcome', row).innerHTML = html
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** The story of one burst request, shown in its row and read out in full by its title. */
class BurstStory {
  constructor(row) {
    this.row = row
    this.started = performance.now()
    this.refusals = [] // { reason, waitMs, queuedMs }
    this.queuedMs = 0
    this.totalMs = 0
    this.finished = false
    this.failure = null
    this.served = null
  }

  refused(reason, waitMs, queuedMs) {
    this.refusals.push({ reason, waitMs, queuedMs })
    this.queuedMs += queuedMs
    this.render()
  }

  admitted(queuedMs) {
    this.queuedMs += queuedMs
    this.render()
  }

  finish() {
    this.finished = true
    this.render()
  }

  render() {
    const { row, refusals } = this
    if (!this.finished) this.totalMs = performance.now() - this.started
    const waitedMs = refusals.reduce((sum, r) => sum + r.waitMs, 0)
    row.dataset.refusals = String(refusals.length)
    // chat() calls `refused` only for a refusal it waits out and retries; the last one, when it gives up, goes to `failed`.
    row.dataset.retries = String(refusals.length)
    row.dataset.waitedMs = String(Math.round(waitedMs))
    row.dataset.queuedMs = String(Math.round(this.queuedMs))
    row.dataset.totalMs = String(Math.round(this.totalMs))
    const refusedCell = $('.burst-refused', row)
    refusedCell.textContent = refusals.length === 0 ? '–' : `${refusals.length}× · ${formatSeconds(waitedMs)}`
    refusedCell.classList.toggle('has', refusals.length > 0)
    const queuedCell = $('.burst-queued', row)
    queuedCell.textContent = this.queuedMs >= 50 ? formatMs(this.queuedMs) : '–'
    queuedCell.classList.toggle('has', this.queuedMs >= 50)
    $('.burst-total', row).textContent = formatSeconds(this.totalMs)
    row.title = this.sentence()
  }

  /** The row in words, for the tooltip and screen readers. */
  sentence() {
    const parts = []
    for (const [i, r] of this.refusals.entries()) {
      parts.push(
        `try ${i + 1} refused (${r.reason}${r.queuedMs >= 50 ? ` after ${formatMs(r.queuedMs)} in the queue` : ''}), told to wait ${formatSeconds(r.waitMs)}, retried`,
      )
    }
    if (this.queuedMs >= 50) parts.push(`queued ${formatMs(this.queuedMs)} in all`)
    if (this.served) parts.push(this.served)
    if (this.failure) parts.push(`gave up: ${this.failure}`)
    parts.push(`${this.finished ? 'total' : 'so far'} ${formatSeconds(this.totalMs)}`)
    return parts.join('; ')
  }
}

async function runBurstRow(row, index) {
  const story = new BurstStory(row)
  row.story = story
  let meta = null
  const prompt = BURST_PROMPTS[index % BURST_PROMPTS.length]
  const result = await chat(
    { messages: [{ role: 'user', content: prompt }], burst: true },
    {
      async refused({ waitMs, code, dimension, message, queuedMs }) {
        const reason = SHORT_DIMENSIONS[dimension] ?? SHORT_REASONS[code] ?? message
        story.refused(reason, waitMs, queuedMs)
        const bar = $('.burst-bar span', row)
        await countdown(waitMs, (seconds, done) => {
          setRow(
            row,
            'refused',
            `<span class="burst-state">retry in <strong class="countdown">${seconds}</strong>&nbsp;s</span>`,
          )
          bar.style.width = `${(done * 100).toFixed(1)}%`
        })
        bar.style.width = '0'
        setRow(row, 'retrying', `<span class="burst-state">retrying</span>`)
        scheduleQuotaRefresh()
      },
      meta(data) {
        meta = data
        story.admitted(data.queuedMs)
        const state = data.fallback ? 'fallback' : story.queuedMs >= 50 ? 'queued' : 'admitted'
        setRow(
          row,
          state,
          `<span class="burst-state">streaming</span> <span class="burst-model">${escapeHtml(data.model)}</span>`,
        )
      },
      done() {
        const tries = story.refusals.length + 1
        const model = `<span class="burst-model">${escapeHtml(meta?.model ?? '?')}</span>`
        setRow(
          row,
          row.dataset.state,
          `${meta?.fallback ? '<span class="burst-state">↪</span> ' : ''}${model}${tries > 1 ? ` <span class="burst-try">try&nbsp;${tries}</span>` : ''}`,
        )
        row.dataset.outcome = meta?.fallback ? 'fallback' : 'served'
        story.served = `served by ${meta?.model ?? '?'}${meta?.fallback ? ` (a fallback: ${meta.requestedModel} was busy)` : ''} on try ${tries}`
      },
      failed(message) {
        setRow(row, 'failed', `<span class="burst-state">gave up</span>`)
        row.dataset.outcome = 'failed'
        story.failure = message
      },
    },
    { maxRetries: BURST_MAX_RETRIES },
  ).catch((error) => {
    setRow(row, 'failed', `<span class="burst-state">error</span>`)
    row.dataset.outcome = 'failed'
    story.failure = error.message
    return { ok: false }
  })
  story.finish()
  row.classList.add('finished')
  row.dataset.done = 'true'
  return { ok: result.ok, meta, waits: story.refusals.length, ms: story.totalMs }
}

async function burst() {
  els.burstList.replaceChildren()
  els.burstClear.hidden = true
  els.burst.disabled = true
  burstRunning++
  const rows = Array.from({ length: BURST_SIZE }, (_, i) => burstRow(i))
  els.burstList.append(burstHead(), ...rows)
  // The total time of unfinished rows counts up, so a row that waits says so as it waits.
  const tick = () => {
    for (const row of rows) if (!row.story?.finished) row.story?.render()
    const count = (test) => rows.filter(test).length
    const parts = [`${count((r) => r.dataset.done === 'true')}/${BURST_SIZE} done`]
    const refused = count((r) => r.dataset.state === 'refused')
    const streaming = count(
      (r) => r.dataset.done !== 'true' && ['admitted', 'queued', 'fallback'].includes(r.dataset.state),
    )
    const sent = count((r) => ['pending', 'retrying'].includes(r.dataset.state))
    if (sent > 0) parts.push(`${sent} waiting for the guard`)
    if (refused > 0) parts.push(`${refused} waiting out a refusal`)
    if (streaming > 0) parts.push(`${streaming} streaming`)
    els.burstSummary.textContent = parts.join(' · ')
  }
  tick()
  const ticker = setInterval(tick, 200)
  const outcomes = await Promise.all(rows.map((row, i) => runBurstRow(row, i)))
  clearInterval(ticker)
  burstRunning--
  const served = outcomes.filter((o) => o.ok).length
  const fallbacks = outcomes.filter((o) => o.meta?.fallback).length
  const waited = outcomes.filter((o) => o.waits > 0).length
  const longest = Math.max(...outcomes.map((o) => o.ms))
  els.burstSummary.textContent = `${served}/${BURST_SIZE} served · ${fallbacks} by a fallback · ${waited} refused then retried · all done in ${formatSeconds(longest)}`
  els.burst.disabled = false
  els.burstClear.hidden = false
  scheduleQuotaRefresh()
}

els.burst.addEventListener('click', () => {
  if (burstRunning === 0) burst()
})
els.burstClear.addEventListener('click', () => {
  els.burstList.replaceChildren()
  els.burstSummary.textContent = ''
  els.burstClear.hidden = true
})
$('#burst-count').textContent = String(BURST_SIZE)

// ---------------------------------------------------------------------------------------------
// Upstream usage chart: GET /api/usage (guard.usageReport() for the last 30 minutes), drawn as one
// small SVG per account x model and figure: a bar per minute, the limit as a red line.

const SVG = 'http://www.w3.org/2000/svg'
const CHART_WIDTH = 150
const CHART_HEIGHT = 64
let usageFetching = false

async function refreshUsage() {
  if (usageFetching) return
  usageFetching = true
  try {
    const response = await fetch('/api/usage', { cache: 'no-store' })
    if (response.ok) renderUsage(await response.json())
  } catch {
    // Tried again at the next refresh.
  } finally {
    usageFetching = false
  }
}

function renderUsage(usage) {
  const chart = $('#usage-chart')
  if (usage.lanes.length === 0) return
  const slots = Math.max(1, Math.round((usage.to - usage.from) / 60_000))
  chart.replaceChildren(
    ...usage.lanes.map((lane) => {
      const box = document.createElement('div')
      box.className = 'usage-lane'
      box.dataset.model = lane.model
      const title = document.createElement('h3')
      title.innerHTML = `${escapeHtml(lane.model)} <span class="muted">· ${escapeHtml(lane.account)}</span>`
      const pair = document.createElement('div')
      pair.className = 'usage-pair'
      pair.append(
        plot(
          'requests / min',
          lane.peakRequestsPerMinute,
          lane.limits.rpm,
          lane.minutes,
          'requests',
          usage.from,
          slots,
        ),
        plot('tokens / min', lane.peakTokensPerMinute, lane.limits.tpm, lane.minutes, 'tokens', usage.from, slots),
      )
      box.append(title, pair)
      return box
    }),
  )
}

/** One figure of one account x model: a bar per minute with data, the limit as a line across. */
function plot(label, peak, limit, minutes, field, from, slots) {
  const figure = document.createElement('figure')
  figure.className = 'usage-plot'
  figure.dataset.figure = field
  const caption = document.createElement('figcaption')
  caption.innerHTML = `${label}: peak <strong>${number.format(peak)}</strong> · <span class="limit-key">limit ${number.format(limit)}</span>`
  const svg = document.createElementNS(SVG, 'svg')
  svg.setAttribute('viewBox', `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`)
  svg.setAttribute('preserveAspectRatio', 'none')
  svg.setAttribute('role', 'img')
  svg.setAttribute('aria-label', `${label}: peak ${peak}, limit ${limit}`)
  // The limit sits at 85 % of the height unless a minute went above it.
  const top = Math.max(limit / 0.85, peak * 1.05, 1)
  const y = (value) => CHART_HEIGHT - (value / top) * CHART_HEIGHT
  const step = CHART_WIDTH / slots
  for (const minute of minutes) {
    const value = minute[field]
    if (!(value > 0)) continue
    const slot = Math.round((minute.at - from) / 60_000)
    const height = Math.max(3, CHART_HEIGHT - y(value)) // a small minute stays visible
    const bar = document.createElementNS(SVG, 'rect')
    bar.setAttribute('class', 'usage-bar')
    bar.setAttribute('x', String(slot * step + 0.5))
    bar.setAttribute('width', String(Math.max(1, step - 1)))
    bar.setAttribute('y', String(CHART_HEIGHT - height))
    bar.setAttribute('height', String(height))
    bar.dataset.value = String(value)
    svg.append(bar)
  }
  const line = document.createElementNS(SVG, 'rect')
  line.setAttribute('class', 'usage-limit')
  line.setAttribute('x', '0')
  line.setAttribute('width', String(CHART_WIDTH))
  line.setAttribute('y', String(y(limit) - 1))
  line.setAttribute('height', '2')
  line.dataset.value = String(limit)
  svg.append(line)
  figure.append(caption, svg)
  return figure
}

// ---------------------------------------------------------------------------------------------
// Start

els.relayUrl.textContent = `${location.origin}/v1`
updateComposer()
refreshQuota()
// Reset times count down locally every second; a slow poll catches other tabs' usage.
setInterval(renderQuota, 1000)
setInterval(() => scheduleQuotaRefresh(), 5000)
refreshUsage()
setInterval(refreshUsage, 3000)
els.input.focus()
