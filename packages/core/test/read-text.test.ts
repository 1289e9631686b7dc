import { PassThrough, Readable } from 'node:stream'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createGuard, createRelay } from '../src/index.js'
import { readText } from '../src/read-text.js'

const tooLarge = () => new Error('too large')

/** `bytes` cut at `cuts`, as a Node stream, a web ReadableStream and an async generator. */
function sources(bytes: Buffer, cuts: number[]): Record<string, () => AsyncIterable<Uint8Array>> {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b)
  const pieces: Buffer[] = []
  let from = 0
  for (const point of [...points, bytes.length]) {
    pieces.push(bytes.subarray(from, point))
    from = point
  }
  return {
    'Node stream': () => Readable.from(pieces, { objectMode: false }),
    'web ReadableStream': () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          for (const piece of pieces) controller.enqueue(new Uint8Array(piece))
          controller.close()
        },
      }) as unknown as AsyncIterable<Uint8Array>,
    'async generator': () =>
      (async function* () {
        for (const piece of pieces) yield piece
      })(),
  }
}

describe('readText', () => {
  it('gives back any UTF-8 text, however it is cut (multi-byte characters split too), from every kind of stream', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary' }), fc.array(fc.nat(), { maxLength: 8 }), async (text, cuts) => {
        const bytes = Buffer.from(text)
        for (const [kind, make] of Object.entries(sources(bytes, cuts))) {
          expect(await readText(make(), bytes.length, tooLarge), kind).toBe(text)
        }
      }),
      { numRuns: 150 },
    )
  })

  it('with notUtf8: valid UTF-8 however it is cut is read, any invalid byte rejects with that error', async () => {
    const notUtf8 = () => new Error('not UTF-8')
    await fc.assert(
      fc.asyncProperty(
        fc.string({ unit: 'binary' }),
        fc.nat(),
        fc.array(fc.nat(), { maxLength: 8 }),
        async (text, at, cuts) => {
          const bytes = Buffer.from(text)
          for (const [kind, make] of Object.entries(sources(bytes, cuts)))
            expect(await readText(make(), bytes.length, tooLarge, notUtf8), kind).toBe(text)
          // A lone 0xFF (never in UTF-8) anywhere: refused, from every kind of stream.
          const bad = Buffer.concat([
            bytes.subarray(0, at % (bytes.length + 1)),
            Buffer.from([0xff]),
            bytes.subarray(at % (bytes.length + 1)),
          ])
          for (const [kind, make] of Object.entries(sources(bad, cuts)))
            await expect(readText(make(), bad.length, tooLarge, notUtf8), kind).rejects.toThrow('not UTF-8')
        },
      ),
      { numRuns: 100 },
    )
  })

  it('accepts exactly maxBytes and refuses one byte more, on every kind of stream', async () => {
    const bytes = Buffer.from('héllo wörld') // 13 bytes
    for (const [kind, make] of Object.entries(sources(bytes, [3, 7]))) {
      expect(await readText(make(), 13, tooLarge), kind).toBe('héllo wörld')
      await expect(readText(make(), 12, tooLarge), kind).rejects.toThrow('too large')
    }
  })

  it('stops reading a Node stream past the cap: the source is destroyed, the rest never read', async () => {
    const source = new PassThrough()
    const reading = readText(source, 10, tooLarge)
    source.write(Buffer.alloc(8))
    source.write(Buffer.alloc(8))
    await expect(reading).rejects.toThrow('too large')
    expect(source.destroyed).toBe(true)
  })

  it("past the cap, a stream that reports its destroy as an error (undici's body does) leaves no error unhandled", async () => {
    let unhandled = 0
    const body = new Readable({
      read() {},
      destroy(error, callback) {
        callback(error ?? Object.assign(new Error('Request aborted'), { code: 'UND_ERR_ABORTED' }))
      },
    })
    const emit = body.emit.bind(body)
    body.emit = (event: string | symbol, ...args: unknown[]) => {
      if (event === 'error' && body.listenerCount('error') === 0) unhandled++
      return event === 'error' && body.listenerCount('error') === 0 ? false : emit(event, ...args)
    }
    const reading = readText(body, 10, tooLarge)
    body.push(Buffer.alloc(8))
    body.push(Buffer.alloc(8))
    await expect(reading).rejects.toThrow('too large')
    await new Promise((resolve) => setImmediate(resolve))
    expect(body.destroyed).toBe(true)
    expect(unhandled).toBe(0)
  })

  it('returns an iterator past the cap (a web stream is cancelled)', async () => {
    let cancelled = false
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new Uint8Array(8))
      },
      cancel() {
        cancelled = true
      },
    })
    await expect(readText(stream as unknown as AsyncIterable<Uint8Array>, 20, tooLarge)).rejects.toThrow('too large')
    expect(cancelled).toBe(true)
  })

  it("rejects with the stream's own error, and a stream closed before its end as a premature close", async () => {
    const failing = new PassThrough()
    const failed = readText(failing, 100, tooLarge)
    failing.write('partial')
    failing.destroy(new Error('connection reset'))
    await expect(failed).rejects.toThrow('connection reset')

    const cut = new PassThrough()
    const closed = readText(cut, 100, tooLarge)
    cut.write('partial')
    cut.destroy()
    await expect(closed).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' })
  })

  it('reads a Node stream someone paused or left a readable listener on, and refuses a chunk that is no bytes', async () => {
    const paused = new PassThrough()
    paused.pause()
    const reading = readText(paused, 100, tooLarge)
    paused.end('still read')
    expect(await reading).toBe('still read')

    const watched = new PassThrough()
    watched.on('readable', () => undefined)
    const read = readText(watched, 100, tooLarge)
    watched.end('read too')
    expect(await read).toBe('read too')

    await expect(readText(Readable.from([{ no: 'bytes' }]), 100, tooLarge)).rejects.toThrow(TypeError)
  })

  it('reads string chunks as UTF-8 and an empty stream as empty text', async () => {
    expect(await readText(Readable.from(['ab', 'ç'], { objectMode: true }), 10, tooLarge)).toBe('abç')
    expect(await readText(Readable.from([]), 10, tooLarge)).toBe('')
  })
})

describe('createRelay with a stream of chunks that are not bytes', () => {
  it('answers 500 through onError, never an uncaught exception (a JS caller passing an object-mode stream)', async () => {
    const guard = createGuard({
      upstream: { baseURL: 'http://127.0.0.1:9/v1', accounts: [{ id: 'a', apiKey: 'sk-read-text-0123456789' }] },
    })
    const errors: unknown[] = []
    const relay = createRelay(guard, { onError: (error) => errors.push(error) })
    try {
      const answer = await relay({
        method: 'POST',
        path: '/chat/completions',
        headers: { 'content-type': 'application/json' },
        body: Readable.from([{ not: 'bytes' }], { objectMode: true }) as unknown as AsyncIterable<Uint8Array>,
        identity: { user: 'u' },
      })
      expect(answer.status).toBe(500)
      expect(errors).toEqual([expect.any(TypeError)])
    } finally {
      await guard.close()
    }
  })
})
