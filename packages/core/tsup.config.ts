import { defineConfig } from 'tsup'
import { packageBuild } from '../../tsup.shared.js'

const entry = ['src/index.ts', 'src/adapter.ts']

// Two entries (the main one and `@qwen-guard/core/adapter`) share one copy of the code in both
// formats: split chunks for CommonJS too, or adapter.cjs would carry a second guard, error class
// and client cache.
// The CLI (run by bin/qwen-guard.js) as ESM only: it reads import.meta.url.
export default defineConfig([
  { ...packageBuild(entry), dts: { entry }, splitting: true },
  { ...packageBuild(['src/cli.ts']), format: ['esm'], dts: false, clean: false },
])
