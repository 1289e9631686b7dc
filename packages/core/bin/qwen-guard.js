#!/usr/bin/env node
// The installed `qwen-guard` command. A committed shim (not a file in dist/) so that a fresh workspace
// install can link it before the build; it runs the built CLI (src/cli.ts -> dist/cli.js).
const cli = await import('../dist/cli.js').catch((err) => {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes('dist/cli.js')) throw err
  console.error(
    'qwen-guard: dist/cli.js is missing: build @qwen-guard/core first (pnpm build in the qwen-guard repository)',
  )
  process.exit(1)
})

cli.main().catch((err) => {
  console.error(`qwen-guard: ${err instanceof Error ? err.message : String(err)}`)
  process.exitCode = 1
})
