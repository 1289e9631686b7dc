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

/** Calls /api/chat and reports what happens through `hooks`; waits out refusals and retries. */
async function chat(body, hooks, { maxRetries = Infinity } = {}) {
  for (let attempt = 0; ; attempt++) {
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
      await hooks.refused?.({ waitMs, code: error.code ?? 'rate_limited', dimension, message: error.message ?? 'Rate limited', attempt })
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
const formatWindow = (seconds) => (seconds >= 86_400 && seconds % 86_400 === 0 ? 'daily' : seconds >= 3600 ? `${seconds / 3600} h` : `${seconds} s`)
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
const SHORT_DIMENSIONS = { rpm: 'rpm', rps: 'rps', tpm: 'tpm', tps: 'tps', tokensPerDay: 'daily', usdPerDay: 'budget', concurrency: 'in flight' }
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

async function refreshQuota() {
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
  const limits = [...quota.limits].sort((a, b) => DIMENSION_ORDER.indexOf(a.dimension) - DIMENSION_ORDER.indexOf(b.dimension))
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
    let reset
    if (limit.dimension === 'concurrency') reset = remaining < limit.limit ? 'frees as answers end' : 'none in flight'
    else if (limit.resetMs <= 0 || remaining >= limit.limit) reset = `full · ${formatWindow(limit.windowSeconds)} window`
    else if (resetLeft <= 0) reset = 'resetting…'
    else reset = `resets in ${formatWait(resetLeft)}`
    return `
      <div class="meter" data-dimension="${limit.dimension}" data-level="${level}">
        <div class="meter-label">${info.label} <span class="muted">${info.unit}</span></div>
        <div class="meter-value"><strong class="remaining">${number.format(remaining)}</strong><span class="muted"> / ${number.format(limit.limit)} left</span></div>
        <div class="bar"><span style="width:${(share * 100).toFixed(1)}%"></span></div>
        <div class="meter-reset muted small">${reset}</div>
      </div>`
  })
  els.meters.innerHTML = rows.join('')

  // A window that just ended: fetch the fresh numbers instead of showing "resetting…".
  if (limits.some((l) => l.resetMs > 0 && l.resetMs - elapsed <= -250 && l.remaining < l.limit)) scheduleQuotaRefresh(0)
}

// ---------------------------------------------------------------------------------------------
// Chat

function scrollToEnd() {
  els.messages.scrollTop = els.messages.scrollHeight
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

  const result = await chat({ messages: history }, {
    async refused({ waitMs, code, dimension, message }) {
      node.dataset.state = 'refused'
      refusal.hidden = false
      $('.refusal-reason', refusal).textContent = `${reasonFor(code, message, dimension)}.`
      scheduleQuotaRefresh()
      await countdown(waitMs, (seconds, done) => {
        $('.countdown', refusal).textContent = String(seconds)
        $('.progress span', refusal).style.width = `${(done * 100).toFixed(1)}%`
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
      if (Number(node.dataset.retried ?? 0) > 0) parts.push(`after ${node.dataset.retried} wait${node.dataset.retried === '1' ? '' : 's'}`)
      $('.msg-foot', node).textContent = parts.join(' · ')
    },
    failed(message) {
      node.dataset.state = 'error'
      refusal.hidden = true
      textEl.textContent = answer ? `${answer}\n\n— ${message}` : message
    },
  }).catch((error) => {
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

function burstRow(index) {
  const row = document.createElement('li')
  row.className = 'burst-row'
  row.dataset.state = 'pending'
  row.innerHTML = `<span class="burst-index">${String(index + 1).padStart(2, '0')}</span>
    <span class="burst-state">sending</span>
    <span class="burst-detail muted"></span>
    <span class="burst-waits" hidden title="Refusals this request waited out before it was served"></span>
    <span class="burst-bar"><span></span></span>`
  return row
}

function setRow(row, state, label, detail = '') {
  row.dataset.state = state
  $('.burst-state', row).textContent = label
  $('.burst-detail', row).textContent = detail
}

async function runBurstRow(row, index) {
  const started = performance.now()
  let waits = 0
  let meta = null
  const prompt = BURST_PROMPTS[index % BURST_PROMPTS.length]
  const result = await chat({ messages: [{ role: 'user', content: prompt }], burst: true }, {
    async refused({ waitMs, code, dimension, message }) {
      waits++
      row.dataset.refusals = String(waits)
      const badge = $('.burst-waits', row)
      badge.textContent = `↻ ${waits}`
      badge.hidden = false
      setRow(row, 'refused', 'refused', SHORT_DIMENSIONS[dimension] ?? SHORT_REASONS[code] ?? message)
      const bar = $('.burst-bar span', row)
      await countdown(waitMs, (seconds, done) => {
        $('.burst-state', row).innerHTML = `refused · retry in <strong class="countdown">${seconds}</strong> s`
        bar.style.width = `${(done * 100).toFixed(1)}%`
      })
      bar.style.width = '0'
      setRow(row, 'retrying', 'retrying', '')
      scheduleQuotaRefresh()
    },
    meta(data) {
      meta = data
      if (data.fallback) setRow(row, 'fallback', `fallback → ${data.model}`, '')
      else if (data.queuedMs >= 50) setRow(row, 'queued', `queued ${formatMs(data.queuedMs)}`, data.model)
      else setRow(row, 'admitted', 'admitted', data.model)
    },
    done(data) {
      row.classList.add('finished')
      const detail = $('.burst-detail', row)
      detail.textContent = [detail.textContent, formatSeconds(data.elapsedMs)].filter(Boolean).join(' · ')
    },
    failed(message) {
      setRow(row, 'failed', 'gave up', message)
    },
  }, { maxRetries: BURST_MAX_RETRIES }).catch((error) => {
    setRow(row, 'failed', 'error', error.message)
    return { ok: false }
  })
  row.dataset.done = 'true'
  return { ok: result.ok, meta, waits, ms: performance.now() - started }
}

async function burst() {
  els.burstList.replaceChildren()
  els.burstClear.hidden = true
  els.burst.disabled = true
  burstRunning++
  const rows = Array.from({ length: BURST_SIZE }, (_, i) => burstRow(i))
  els.burstList.append(...rows)
  els.burstSummary.textContent = `${BURST_SIZE} in flight`
  const outcomes = await Promise.all(rows.map((row, i) => runBurstRow(row, i)))
  burstRunning--
  const served = outcomes.filter((o) => o.ok).length
  const fallbacks = outcomes.filter((o) => o.meta?.fallback).length
  const waited = outcomes.filter((o) => o.waits > 0).length
  els.burstSummary.textContent = `${served}/${BURST_SIZE} served · ${fallbacks} fallback · ${waited} waited`
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
// Start

els.relayUrl.textContent = `${location.origin}/v1`
updateComposer()
refreshQuota()
// Reset times count down locally every second; a slow poll catches other tabs' usage.
setInterval(renderQuota, 1000)
setInterval(() => scheduleQuotaRefresh(), 5000)
els.input.focus()
