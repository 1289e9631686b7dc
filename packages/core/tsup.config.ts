import { defineConfig } from 'tsup'
import { packageBuild } from '../../tsup.shared.js'

const entry = ['src/index.ts', 'src/adapter.ts']

// Two entries (the main one and `@qwen-guard/core/adapter`) share one copy of the code in both
// formats: split chunks for CommonJS too, or adapter.cjs would carry a second guard, error class
// and client cache.
export default defineConfig({ ...packageBuild(entry), dts: { entry }, splitting: true })
