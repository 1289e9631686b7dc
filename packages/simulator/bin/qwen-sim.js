#!/usr/bin/env node
// The installed `qwen-sim` command. A committed shim (not a file in dist/) so that a fresh workspace
// install can link it before the build; it runs the built CLI (src/cli.ts).
import { main } from '../dist/cli.js'

main().catch((err) => {
  console.error(`qwen-sim: ${err instanceof Error ? err.message : String(err)}`)
  process.exitCode = 1
})
