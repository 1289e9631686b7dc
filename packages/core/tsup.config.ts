import { copyFileSync } from 'node:fs'
import { defineConfig } from 'tsup'
import { packageBuild } from '../../tsup.shared.js'

const entry = ['src/index.ts', 'src/adapter.ts']

// Two entries (the main one and `@qwen-guard/core/adapter`) share one copy of the code in both
// formats: split chunks for CommonJS too, or adapter.cjs would carry a second guard, error class
// and client cache.
// The estimator's large tables are one file, dist/vocabulary-tables.bin, that the chunks of both
// formats read from their own folder (packed-tables.ts): import.meta.url in ESM, __dirname in
// CommonJS, where esbuild has no import.meta (defined undefined here rather than warned about).
// The CLI (run by bin/qwen-guard.js) as ESM only: it reads import.meta.url.
export default defineConfig([
  {
    ...packageBuild(entry),
    dts: { entry },
    splitting: true,
    esbuildOptions(options, { format }) {
      if (format === 'cjs') options.define = { ...options.define, 'import.meta.url': 'undefined' }
    },
    onSuccess: async () => copyFileSync('src/vocabulary-tables.bin', 'dist/vocabulary-tables.bin'),
  },
  { ...packageBuild(['src/cli.ts']), format: ['esm'], dts: false, clean: false },
])
