/**
 * Entry point of `pnpm start`: reads the environment, starts the backend (simulator or Qwen, memory
 * or Redis), serves the app, prints the URL, and on Ctrl-C / SIGTERM closes the HTTP server, the
 * guard and the backend in that order. A bad configuration exits 1 with one line saying why.
 */
import { safeErrorLine } from '@qwen-guard/core'
import type { AddressInfo } from 'node:net'
import { createServer, type Server } from 'node:http'
import { createChatApp } from './app.js'
import { startBackend } from './backend.js'
import { ConfigError, loadConfig } from './config.js'

/** How long open streams get to finish before the process stops anyway. */
const SHUTDOWN_GRACE_MS = 3_000

async function main(): Promise<void> {
  const config = loadConfig(process.env)
  const backend = await startBackend(config)
  const chat = createChatApp({
    upstream: backend.upstream,
    backend: backend.backend,
    ...(backend.store ? { store: backend.store } : {}),
  })
  const server = createServer(chat.app)

  try {
    await listen(server, config.port, config.host)
  } catch (error) {
    await chat.close()
    await backend.close()
    throw error
  }

  const { port } = server.address() as AddressInfo
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host
  console.log(`qwen-guard example chat: open http://${shownHost}:${port}/`)
  console.log(`  answers from the ${backend.description}`)
  console.log(`  OpenAI-compatible relay at http://${shownHost}:${port}/v1   (Ctrl-C to stop)`)

  let stopping = false
  const stop = async (signal: string) => {
    if (stopping) return
    stopping = true
    console.log(`\n${signal}: stopping`)
    // Streams in progress get a short grace period; then the remaining sockets are cut.
    const forced = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS)
    forced.unref()
    server.closeIdleConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    clearTimeout(forced)
    await chat.close()
    await backend.close()
    console.log('stopped')
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      stop(signal).then(
        () => process.exit(0),
        (error: unknown) => {
          console.error(`error while stopping: ${error instanceof Error ? error.message : String(error)}`)
          process.exit(1)
        },
      )
    })
  }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE')
        reject(new ConfigError(`PORT ${port} is already in use on ${host}: stop the other process or set PORT`))
      else if (error.code === 'EACCES')
        reject(new ConfigError(`PORT ${port} needs privileges on ${host}: use a port above 1023`))
      else if (error.code === 'ENOTFOUND' || error.code === 'EADDRNOTAVAIL' || error.code === 'EAI_AGAIN') {
        reject(new ConfigError(`HOST "${host}" is not an address of this machine (${error.code})`))
      } else reject(error)
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve()
    })
  })
}

main().catch((error: unknown) => {
  // Configuration problems are the user's to fix: one clear line. Anything else: one line too,
  // without a stack (logs must not carry what a response may not).
  if (error instanceof ConfigError) console.error(`qwen-guard example: ${error.message}`)
  else console.error(`qwen-guard example failed to start: ${safeErrorLine(error)}`)
  process.exit(1)
})
