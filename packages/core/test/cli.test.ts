/**
 * `qwen-guard report` flags (src/cli.ts `parseArgs`): the period each flag gives, and a clear error
 * naming the flag for every bad one (the command then exits 2 with the usage). The run against Redis
 * itself, through the built bin: test/usage/redis.test.ts.
 */
import { describe, expect, it } from 'vitest'
import { HelpRequested, parseArgs, USAGE } from '../src/cli.js'

const NOW = Date.UTC(2026, 4, 1, 12)
const URL = 'redis://127.0.0.1:6379'
const parse = (...args: string[]) => parseArgs(args, NOW)

describe('qwen-guard report: flags', () => {
  it('defaults: the last 24 h, prefix qg, a table', () => {
    expect(parse('report', '--redis', URL)).toEqual({
      redis: URL,
      prefix: 'qg',
      period: { from: NOW - 86_400_000, to: NOW },
      json: false,
    })
  })

  it('reads every flag, a leading -- included', () => {
    expect(
      parse('--', 'report', '--redis', URL, '--prefix', 'app', '--from', '2026-04-30T00:00Z', '--to', String(NOW)),
    ).toMatchObject({ prefix: 'app', period: { from: Date.UTC(2026, 3, 30), to: NOW } })
    expect(parse('report', '--redis=rediss://h:1', '--last', '90m', '--at-limit', '0.5', '--json')).toEqual({
      redis: 'rediss://h:1',
      prefix: 'qg',
      period: { from: NOW - 90 * 60_000, to: NOW, atLimitRatio: 0.5 },
      json: true,
    })
  })

  it('the widest period a Date holds is a period', () => {
    expect(parse('report', '--redis', URL, '--from', '0', '--to', '8640000000000000').period).toEqual({
      from: 0,
      to: 8.64e15,
    })
    expect(parse('report', '--redis', URL, '--last', '100000000d').period).toEqual({ from: NOW - 8.64e15, to: NOW })
  })

  it('--help and -h ask for the usage, which lists every flag', () => {
    expect(() => parse('--help')).toThrow(HelpRequested)
    expect(() => parse('report', '-h')).toThrow(HelpRequested)
    for (const flag of ['--redis', '--prefix', '--last', '--from', '--to', '--at-limit', '--json', '--help'])
      expect(USAGE).toContain(flag)
  })

  it.each([
    [[], 'missing command: report'],
    [['reprot', '--redis', URL], 'unknown command reprot'],
    [['report'], '--redis URL is required'],
    [['report', '--redis', 'http://127.0.0.1:6379'], '--redis must be a redis:// or rediss:// URL'],
    [['report', '--redis', URL, '--bogus'], 'unknown flag --bogus'],
    [['report', '--redis', URL, 'extra'], 'unexpected argument extra'],
    [['report', '--redis', URL, '--last', '7x'], '--last: not a duration: "7x"'],
    [['report', '--redis', URL, '--last', '0m'], '--last: must be longer than 0, got "0m"'],
    [['report', '--redis', URL, '--last', '1d', '--from', '1'], '--last and --from exclude each other'],
    [['report', '--redis', URL, '--from', 'yesterday'], '--from: not a time: yesterday'],
    [['report', '--redis', URL, '--to', '2026-13-01'], '--to: not a time: 2026-13-01'],
    [['report', '--redis', URL, '--at-limit', '1.5'], '--at-limit must be a number in (0, 1], got 1.5'],
    [['report', '--redis', URL, '--at-limit', 'x'], '--at-limit must be a number in (0, 1], got x'],
    [['report', '--redis', URL, '--from', '2026-05-02', '--to', '2026-05-01'], 'the period is empty'],
    // A prefix no guard can have (store.prefix rules) used to read an empty report and exit 0.
    [
      ['report', '--redis', URL, '--prefix', ''],
      `--prefix must be a guard's store.prefix (non-empty, without { or }), got ""`,
    ],
    [['report', '--redis', URL, '--prefix', '{qg}'], `--prefix must be a guard's store.prefix`],
    // Past a Date's range: read from Redis, then failed with "Invalid time value" (exit 1).
    [['report', '--redis', URL, '--to', '99999999999999999'], '--to: not a time: 99999999999999999'],
    [['report', '--redis', URL, '--from', '8640000000000001'], '--from: not a time: 8640000000000001'],
    [['report', '--redis', URL, '--last', '99999999999d'], '--last: too long: "99999999999d"'],
  ])('%j -> %s', (args, message) => {
    let error: unknown
    try {
      parse(...args)
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(Error)
    expect(error).not.toBeInstanceOf(HelpRequested)
    expect((error as Error).message.startsWith(message), (error as Error).message).toBe(true)
  })
})
