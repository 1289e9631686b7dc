import type { IncomingMessage, ServerResponse } from 'node:http'
import type { SimClock } from './clock.js'
import { chatSeed, completionPieces, DEFAULT_REASONING_TOKENS, reasoningSeed } from './completion.js'
import { errorBody, newRequestId, REFUSALS, type ErrorAnswer } from './errors.js'
import type { FaultTable } from './faults.js'
import type { Lane, LaneTable } from './limits.js'
import type { ResolvedAccount, ResolvedOptions } from './options.js'
import {
  bodyTooLarge,
  isErrorAnswer,
  maxTokensOutOfRange,
  modelNotFound,
  parseChatRequest,
  type ChatRequest,
} from './request.js'
import {
  completionBody,
  failedStreamFrames,
  nativeErrorBody,
  sseErrorBody,
  streamFrames,
  type Completion,
  type Frame,
} from './responses.js'
import type { GlobalStats } from './stats.js'
import { countPromptTokens } from './tokens.js'
import type { FaultSpec } from './types.js'

const PREFIX = '/compatible-mode/v1'
const CHAT_PATH = `${PREFIX}/chat/completions`
const MODELS_PATH = `${PREFIX}/models`

/** The state the request handler works on; owned by `startSimulator`. */
export interface SimState {
  options: ResolvedOptions
  clock: SimClock
  lanes: LaneTable
  faults: FaultTable
  stats: GlobalStats
}

/** The node:http request listener of the simulator. */
export function createHandler(state: SimState) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    state.stats.calls++
    state.stats.inFlight++
    res.once('close', () => state.stats.inFlight--)
    const requestId = newRequestId()
    const path = req.url === undefined ? '' : stripQuery(req.url)
    if (path === CHAT_PATH && req.method === 'POST') return chat(state, req, res, requestId)
    if (path === MODELS_PATH && req.method === 'GET') return models(state, req, res, requestId)
    const status = path === CHAT_PATH || path === MODELS_PATH ? 405 : 404
    const e = {
      status,
      code: 'not_found',
      type: 'invalid_request_error',
      message: `No route for ${req.method} ${path}.`,
      param: null,
    }
    sendError(state, res, e, requestId)
  }
}

function stripQuery(url: string): string {
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

/** The account of the Bearer key, or undefined (then a 401 was sent). */
function authenticate(state: SimState, req: IncomingMessage, res: ServerResponse, requestId: string) {
  const header = req.headers.authorization
  const key = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined
  const account = key === undefined ? undefined : state.options.keys.get(key)
  if (!account) sendError(state, res, REFUSALS.invalid_api_key, requestId)
  return account
}

function models(state: SimState, req: IncomingMessage, res: ServerResponse, requestId: string): void {
  if (!authenticate(state, req, res, requestId)) return
  const data = state.options.models.map((id) => ({ id, object: 'model', created: 1_700_000_000, owned_by: 'system' }))
  sendJson(res, 200, JSON.stringify({ object: 'list', data }), requestId)
}

function chat(state: SimState, req: IncomingMessage, res: ServerResponse, requestId: string): void {
  const account = authenticate(state, req, res, requestId)
  if (!account) return
  const limit = state.options.maxBodyBytes
  if (Number(req.headers['content-length'] ?? 0) > limit) {
    sendError(state, res, bodyTooLarge(limit), requestId, true)
    return
  }
  readBody(req, limit, (text) => {
    if (text === undefined) sendError(state, res, bodyTooLarge(limit), requestId, true)
    else handleChat(state, account, text, req.headers, res, requestId)
  })
}

/** Reads the body as UTF-8; undefined when it outgrows `limit` (chunked uploads without content-length). */
function readBody(req: IncomingMessage, limit: number, done: (text: string | undefined) => void): void {
  const chunks: Buffer[] = []
  let size = 0
  let over = false
  req.on('data', (chunk: Buffer) => {
    size += chunk.length
    if (size > limit) over = true
    else chunks.push(chunk)
  })
  req.on('end', () =>
    done(over ? undefined : chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')),
  )
}

function handleChat(
  state: SimState,
  account: ResolvedAccount,
  text: string,
  headers: IncomingMessage['headers'],
  res: ServerResponse,
  requestId: string,
): void {
  const parsed = parseChatRequest(text)
  if (isErrorAnswer(parsed)) return sendError(state, res, parsed, requestId)
  const lane = state.lanes.get(account, parsed.model)
  if (!lane) return sendError(state, res, modelNotFound(parsed.model), requestId)
  const max = lane.limits.maxTokens
  if (parsed.maxTokens !== undefined && (parsed.maxTokens < 1 || parsed.maxTokens > max)) {
    return sendError(state, res, maxTokensOutOfRange(max), requestId)
  }
  const before = state.faults.pick('before', account.id, parsed.model, parsed.stream)
  if (before) return applyRefusalFault(state, lane, before, res, requestId)

  const promptTokens = countPromptTokens(parsed.messages)
  const contentTokens = parsed.maxTokens ?? state.options.defaultMaxTokens
  const reasoningTokens = parsed.enableThinking ? (parsed.thinkingBudget ?? DEFAULT_REASONING_TOKENS) : 0
  const cost = { promptTokens, completionTokens: contentTokens + reasoningTokens }
  const waitMs = burstWaitMs(headers)
  admit(state, lane, cost, waitMs === undefined ? undefined : state.clock.now() + waitMs, res, requestId, () => {
    state.stats.accepted++
    const after = state.faults.pick('after', account.id, parsed.model, parsed.stream)
    const completion = buildCompletion(parsed, promptTokens, contentTokens, reasoningTokens, requestId)
    respond(state, parsed, completion, after, res)
  })
}

/** `X-DashScope-Wait-Timeout: <seconds>` (3-120): wait out burst refusals instead of answering them. */
function burstWaitMs(headers: IncomingMessage['headers']): number | undefined {
  const raw = headers['x-dashscope-wait-timeout']
  const seconds = Number(Array.isArray(raw) ? raw[0] : raw)
  return raw !== undefined && seconds >= 3 && seconds <= 120 ? seconds * 1000 : undefined
}

/** How often a call queued on the burst rule re-checks, in simulated ms. */
const BURST_POLL_MS = 50

/**
 * Checks and charges a call. A burst refusal with a wait deadline (simulated ms) is re-checked every
 * BURST_POLL_MS until it passes, another limit refuses it, the deadline passes or the client leaves;
 * DashScope queues only burst refusals this way, never RPM/TPM ones.
 */
function admit(
  state: SimState,
  lane: Lane,
  cost: { promptTokens: number; completionTokens: number },
  deadline: number | undefined,
  res: ServerResponse,
  requestId: string,
  accepted: () => void,
): void {
  const attempt = (): boolean => {
    const now = state.clock.now()
    const refusal = lane.check(now, cost.promptTokens + cost.completionTokens)
    if (refusal === 'limit_burst_rate' && deadline !== undefined && now < deadline) return false
    if (refusal) {
      lane.refuse(REFUSALS[refusal].code)
      sendError(state, res, REFUSALS[refusal], requestId)
    } else {
      lane.accept(now, cost.promptTokens, cost.completionTokens)
      accepted()
    }
    return true
  }
  if (attempt()) return
  const timer = setInterval(
    () => {
      if (attempt()) clearInterval(timer)
    },
    Math.max(1, state.clock.toReal(BURST_POLL_MS)),
  )
  res.once('close', () => clearInterval(timer))
}

function buildCompletion(
  req: ChatRequest,
  promptTokens: number,
  contentTokens: number,
  reasoningTokens: number,
  requestId: string,
): Completion {
  const seed = chatSeed(req.model, req.messages)
  return {
    id: `chatcmpl-${requestId}`,
    requestId,
    model: req.model,
    created: Math.floor(Date.now() / 1000),
    pieces: completionPieces(seed, contentTokens),
    reasoning: reasoningTokens > 0 ? completionPieces(reasoningSeed(seed), reasoningTokens) : [],
    promptTokens,
    finishReason: req.maxTokens === undefined ? 'stop' : 'length',
  }
}

/** Writes an accepted completion following the latency model and any 'after' fault. */
function respond(
  state: SimState,
  req: ChatRequest,
  c: Completion,
  fault: FaultSpec | undefined,
  res: ServerResponse,
): void {
  if (fault?.kind === 'hang') return // answered never; the socket closes when the client or close() ends it
  const { ttftMs, perTokenMs } = state.options
  const extra = fault?.kind === 'slow-first-byte' ? (fault.delayMs ?? 1000) : 0
  const firstMs = state.clock.toReal(ttftMs + extra)
  const tokenMs = state.clock.toReal(perTokenMs)
  const tokens = c.pieces.length + c.reasoning.length
  if (!req.stream) {
    const body = completionBody(c)
    const dueMs = firstMs + tokenMs * Math.max(0, tokens - 1)
    return later(res, dueMs, () => sendJson(res, 200, body, c.requestId))
  }
  let frames = streamFrames(c, req.includeUsage)
  if (fault?.kind === 'stream-error' || fault?.kind === 'stream-error-native') {
    frames = failedStreamFrames(frames, fault, c.requestId)
  }
  writeStream(res, frames, firstMs, tokenMs, tokens, c.requestId)
}

/** Runs `fn` after `ms` real ms, or now; cancelled when the client goes away first. */
function later(res: ServerResponse, ms: number, fn: () => void): void {
  if (ms <= 0) return fn()
  const timer = setTimeout(fn, timerMs(ms))
  res.once('close', () => clearTimeout(timer))
}

/** The longest delay Node's timers keep: a longer one (or Infinity) fires after 1 ms. */
const MAX_TIMER_MS = 2_147_483_647

/**
 * A wait as a timer can hold it: one longer than about 24.8 days (a `delayMs` or `ttftMs` of 3e9,
 * meant as "answers long after any client timeout", or a small `timeScale`) is waited that long
 * rather than answered at once, as Node does with a longer timer (TimeoutOverflowWarning).
 */
function timerMs(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS)
}

/** Streams frames, each at ttft + (its token index) x per-token time; batches frames already due. */
function writeStream(
  res: ServerResponse,
  frames: Frame[],
  firstMs: number,
  tokenMs: number,
  tokens: number,
  requestId: string,
): void {
  const start = performance.now()
  const due = (f: Frame) => firstMs + tokenMs * (f.token < 0 ? Math.max(0, tokens - 1) : f.token)
  let next = 0
  let timer: NodeJS.Timeout | undefined
  res.once('close', () => clearTimeout(timer))
  const pump = () => {
    // A timer may fire a little before performance.now() says it is due: then nothing is written
    // yet, so the head must be guarded by headersSent, not by the frame index.
    if (!res.headersSent) res.writeHead(200, streamHeaders(requestId))
    const elapsed = performance.now() - start
    let batch = ''
    while (next < frames.length && due(frames[next]!) <= elapsed) batch += frames[next++]!.text
    if (next === frames.length) return void res.end(batch)
    if (batch) res.write(batch)
    timer = setTimeout(pump, timerMs(Math.max(1, due(frames[next]!) - elapsed)))
  }
  if (firstMs <= 0) pump()
  else timer = setTimeout(pump, timerMs(firstMs))
}

function streamHeaders(requestId: string) {
  return { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-request-id': requestId }
}

/** Refusal-type faults: charged nothing, counted as refused by their code. */
function applyRefusalFault(
  state: SimState,
  lane: Lane,
  fault: FaultSpec,
  res: ServerResponse,
  requestId: string,
): void {
  switch (fault.kind) {
    case 'reset':
      lane.refuse('reset')
      state.stats.refuse('reset')
      res.socket?.destroy()
      return
    case 'internal-error':
      lane.refuse(REFUSALS.internal_error.code)
      return sendError(state, res, REFUSALS.internal_error, requestId)
    case 'overloaded':
      lane.refuse(REFUSALS.overloaded.code)
      return sendError(state, res, REFUSALS.overloaded, requestId)
    case 'sse-error-body': {
      const code = fault.code ?? 'limit_requests'
      lane.refuse(code)
      state.stats.refuse(code)
      return sendRaw(
        res,
        fault.status ?? 429,
        'text/event-stream; charset=utf-8',
        sseErrorBody(fault, requestId),
        requestId,
      )
    }
    default: {
      const code = fault.code ?? 'Throttling.RateQuota'
      lane.refuse(code)
      state.stats.refuse(code)
      return sendRaw(res, fault.status ?? 429, 'application/json', nativeErrorBody(fault, requestId), requestId)
    }
  }
}

function sendError(state: SimState, res: ServerResponse, e: ErrorAnswer, requestId: string, close = false): void {
  state.stats.refuse(e.code)
  if (close) res.setHeader('connection', 'close') // do not read the rest of an oversized upload
  sendJson(res, e.status, errorBody(e, requestId), requestId)
}

function sendJson(res: ServerResponse, status: number, body: string, requestId: string): void {
  sendRaw(res, status, 'application/json', body, requestId)
}

function sendRaw(res: ServerResponse, status: number, contentType: string, body: string, requestId: string): void {
  if (res.destroyed) return
  // A flat header list skips Node's per-key object handling on the hot path.
  res.writeHead(status, [
    'content-type',
    contentType,
    'content-length',
    String(Buffer.byteLength(body)),
    'x-request-id',
    requestId,
  ])
  res.end(body)
}
