/**
 * Attack on onAbort (abort-followers.ts): it must behave as a listener per follower would (what the
 * call sites did before), whatever the followers do while they are being called: start following the
 * same signal (a call started inside another's abort handling), stop other followers, stop
 * themselves, abort another signal followed by the same code. Each scenario runs on both and the
 * calls seen must match. Then: signals followed once and dropped are not kept (WeakMap).
 */
import { getEventListeners } from 'node:events'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { abortableDelay, onAbort } from '../src/abort-followers.js'

type Follow = (signal: AbortSignal, listener: () => void) => () => void

/** What the call sites did before: a listener each. */
const plain: Follow = (signal, listener) => {
  const own = () => listener()
  signal.addEventListener('abort', own, { once: true })
  return () => signal.removeEventListener('abort', own)
}

/** Runs `scenario` with `follow` and returns what it logged and the listeners left on each signal. */
function run(
  follow: Follow,
  scenario: (follow: Follow, log: string[]) => AbortSignal[],
): { log: string[]; left: number[] } {
  const log: string[] = []
  const signals = scenario(follow, log)
  return { log, left: signals.map((s) => getEventListeners(s, 'abort').length) }
}

const scenarios: Record<string, (follow: Follow, log: string[]) => AbortSignal[]> = {
  'a follower starts following the same signal while called (checking `aborted` first, as the sites do)': (
    follow,
    log,
  ) => {
    const c = new AbortController()
    follow(c.signal, () => {
      log.push('a')
      if (c.signal.aborted) log.push('late call rejected at once')
      else follow(c.signal, () => log.push('late'))
    })
    follow(c.signal, () => log.push('b'))
    c.abort()
    return [c.signal]
  },
  'a follower stops a later follower while called': (follow, log) => {
    const c = new AbortController()
    let stopC: () => void = () => undefined
    follow(c.signal, () => log.push('a'))
    follow(c.signal, () => {
      log.push('b')
      stopC()
    })
    stopC = follow(c.signal, () => log.push('c'))
    follow(c.signal, () => log.push('d'))
    c.abort()
    stopC()
    return [c.signal]
  },
  'a follower stops itself and an earlier one while called; every stop again after': (follow, log) => {
    const c = new AbortController()
    const stops: Array<() => void> = []
    stops.push(follow(c.signal, () => log.push('a')))
    stops.push(
      follow(c.signal, () => {
        log.push('b')
        stops[0]!()
        stops[1]!()
      }),
    )
    stops.push(follow(c.signal, () => log.push('c')))
    c.abort()
    for (const stop of stops) stop()
    return [c.signal]
  },
  'every follower stopped by the first one called': (follow, log) => {
    const c = new AbortController()
    const stops: Array<() => void> = []
    stops.push(
      follow(c.signal, () => {
        log.push('a')
        for (const stop of stops) stop()
      }),
    )
    for (const name of ['b', 'c']) stops.push(follow(c.signal, () => log.push(name)))
    c.abort()
    return [c.signal]
  },
  'a follower aborts a second signal whose followers stop followers of the first': (follow, log) => {
    const first = new AbortController()
    const second = new AbortController()
    const stopLater = { fn: (): void => undefined }
    follow(first.signal, () => {
      log.push('first:a')
      second.abort()
    })
    follow(second.signal, () => {
      log.push('second:a')
      stopLater.fn()
    })
    stopLater.fn = follow(first.signal, () => log.push('first:b'))
    follow(first.signal, () => log.push('first:c'))
    first.abort()
    return [first.signal, second.signal]
  },
  'the same signal followed twice for one call (eitherSignal(a, a)), one stopped': (follow, log) => {
    const c = new AbortController()
    const stopA = follow(c.signal, () => log.push('from a'))
    follow(c.signal, () => log.push('from b'))
    stopA()
    c.abort()
    return [c.signal]
  },
  'followed, all stopped, followed again, then aborted': (follow, log) => {
    const c = new AbortController()
    const stops = [follow(c.signal, () => log.push('x')), follow(c.signal, () => log.push('y'))]
    for (const stop of stops) stop()
    follow(c.signal, () => log.push('z'))
    c.abort()
    c.abort()
    return [c.signal]
  },
}

describe('onAbort behaves as a listener per follower', () => {
  for (const [name, scenario] of Object.entries(scenarios)) {
    it(name, () => {
      const expected = run(plain, scenario)
      const actual = run(onAbort, scenario)
      expect(actual.log).toEqual(expected.log)
      // onAbort may hold fewer listeners, never more.
      actual.left.forEach((left, i) => expect(left).toBeLessThanOrEqual(expected.left[i]!))
    })
  }

  it('a follower started on a signal already aborted (during its abort) never fires, and its stop leaves nothing', () => {
    const c = new AbortController()
    let lateStop: (() => void) | undefined
    const log: string[] = []
    onAbort(c.signal, () => {
      lateStop = onAbort(c.signal, () => log.push('late'))
    })
    c.abort()
    expect(log).toEqual([])
    lateStop!()
    expect(getEventListeners(c.signal, 'abort')).toHaveLength(0)
    // Reused after its abort: abortableDelay rejects at once with its reason.
    return expect(abortableDelay(10_000, c.signal)).rejects.toBe(c.signal.reason)
  })
})

describe('signals followed once and dropped are not kept', () => {
  it('10,000 short-lived AbortControllers, each followed and stopped (or aborted), are collected', async () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    let collected = 0
    const registry = new FinalizationRegistry(() => collected++)
    const COUNT = 10_000
    // In a function of its own: nothing of the loop stays in this scope.
    const follow = () => {
      for (let i = 0; i < COUNT; i++) {
        const c = new AbortController()
        registry.register(c.signal, i)
        const stops = [onAbort(c.signal, () => undefined), onAbort(c.signal, () => undefined)]
        if (i % 3 === 0) c.abort()
        else if (i % 3 === 1) for (const stop of stops) stop()
        // else: left followed, the controller dropped: the WeakMap must not keep it either
      }
    }
    follow()
    for (let i = 0; i < 100 && collected < COUNT; i++) {
      gc()
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    expect(collected).toBeGreaterThanOrEqual(COUNT * 0.99)
  })
})
