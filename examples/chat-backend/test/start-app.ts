/**
 * Starts the example the way `server.ts` does, but on port 0, with a simulator tuned for the test
 * (latency and quotas given by the caller), and returns what a test needs to reach and stop it.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { startSimulator, type Simulator, type SimulatorOptions } from '@qwen-guard/simulator'
import { createChatApp, type ChatAppOptions, type ChatApp } from '../src/app.js'
import { demoSimulatorOptions, simulatorUpstream } from '../src/backend.js'

export interface RunningApp {
  url: string
  chat: ChatApp
  simulator: Simulator
  close(): Promise<void>
}

export async function startApp(
  options: {
    /** Merged over the demo's simulator options (latency, limits). */
    simulator?: SimulatorOptions
    app?: Partial<Omit<ChatAppOptions, 'upstream' | 'backend'>>
    /** The upstream key instead of the simulator's own (a wrong one, say). */
    apiKey?: string
  } = {},
): Promise<RunningApp> {
  const simulator = await startSimulator(demoSimulatorOptions(options.simulator))
  const chat = createChatApp({
    upstream: { ...simulatorUpstream(simulator.url), ...(options.apiKey ? { apiKey: options.apiKey } : {}) },
    backend: 'simulator',
    ...options.app,
  })
  const server = createServer(chat.app)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    chat,
    simulator,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await chat.close()
      await simulator.close()
    },
  }
}
