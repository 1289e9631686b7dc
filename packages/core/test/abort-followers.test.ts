import { getEventListeners } from 'node:events'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { abortableDelay, onAbort } from '../src/abort-followers.js'

afterEach(() => {
  vi.useRealTimers()
})

describe('onAbort', () => {
  it('follows a signal with one listener however many follow it, gone with the last follower', () => {
    const controller = new AbortController()
    const stops = Array.from({ length: 50 }, () => onAbort(controller.signal, () => undefined))
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1)
    for (const stop of stops.slice(1)) stop()
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1)
    stops[0]!()
    stops[0]!() // idempotent
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
    // Followed again afterwards: a fresh listener.
    const called: number[] = []
    onAbort(controller.signal, () => called.push(1))
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1)
    controller.abort()
    expect(called).toEqual([1])
  })

  it('calls every follower once, in order, those stopped before not at all, the rest though one throws', async () => {
    const controller = new AbortController()
    const called: string[] = []
    const thrown: unknown[] = []
    const onUncaught = (error: unknown) => thrown.push(error)
    process.prependListener('uncaughtException', onUncaught)
    try {
      onAbort(controller.signal, () => called.push('a'))
      const stopB = onAbort(controller.signal, () => called.push('b'))
      onAbort(controller.signal, () => {
        called.push('c')
        throw new Error('follower c failed')
      })
      onAbort(controller.signal, () => called.push('d'))
      stopB()
      controller.abort()
      controller.abort()
      await new Promise((resolve) => setTimeout(resolve, 0))
    } finally {
      process.off('uncaughtException', onUncaught)
    }
    expect(called).toEqual(['a', 'c', 'd'])
    expect(thrown).toEqual([new Error('follower c failed')])
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
  })
})

describe('abortableDelay', () => {
  it('waits its time and leaves no listener; 0 or less resolves at once', async () => {
    vi.useFakeTimers()
    const controller = new AbortController()
    let done = false
    const waiting = abortableDelay(1_000, controller.signal).then(() => (done = true))
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(999)
    expect(done).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    await waiting
    expect(done).toBe(true)
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
    await expect(abortableDelay(0, undefined)).resolves.toBeUndefined()
    await expect(abortableDelay(-5, controller.signal)).resolves.toBeUndefined()
  })

  it("rejects with the signal's own reason when it aborts first, or has already", async () => {
    vi.useFakeTimers()
    const controller = new AbortController()
    const reason = new Error('stop now')
    const waiting = abortableDelay(60_000, controller.signal)
    controller.abort(reason)
    await expect(waiting).rejects.toBe(reason)
    expect(vi.getTimerCount()).toBe(0)
    await expect(abortableDelay(10, controller.signal)).rejects.toBe(reason)
    await expect(abortableDelay(0, controller.signal)).rejects.toBe(reason)
  })
})
