import type { TestProject } from 'vitest/node'
import { redisServerInstalled, startRedisServer, type RedisServer } from './redis-server.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Loopback URL of the redis-server this run started; empty when Redis suites are skipped. */
    redisUrl: string
  }
}

let server: RedisServer | undefined

/** Starts one redis-server for the whole run. Under CI=true a missing server fails the run. */
export async function setup(project: TestProject): Promise<void> {
  if (!redisServerInstalled()) {
    if (process.env.CI === 'true') throw new Error('CI=true but redis-server is not installed: .ci/run must install it')
    console.warn(
      '\n[qwen-guard] redis-server not found: every Redis suite is SKIPPED in this run (install redis-server to run them)\n',
    )
    project.provide('redisUrl', '')
    return
  }
  server = await startRedisServer()
  project.provide('redisUrl', server.url)
}

export async function teardown(): Promise<void> {
  await server?.stop()
}
