import { defineConfig } from 'tsup'
import { packageBuild } from '../../tsup.shared.js'

// The library in both formats; the CLI (run by bin/qwen-sim.js) as ESM only: it reads import.meta.url.
export default defineConfig([
  packageBuild(),
  { ...packageBuild(['src/cli.ts']), format: ['esm'], dts: false, clean: false },
])
