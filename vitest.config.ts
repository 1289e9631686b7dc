import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const packageSource = (name: string, file = 'index') =>
  fileURLToPath(new URL(`./packages/${name}/src/${file}.ts`, import.meta.url))

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources; test/pack-install.test.ts checks the packed, installed dist.
    alias: [
      { find: /^@qwen-guard\/core\/adapter$/, replacement: packageSource('core', 'adapter') },
      ...['core', 'express', 'koa', 'simulator'].map((name) => ({
        find: new RegExp(`^@qwen-guard/${name}$`),
        replacement: packageSource(name),
      })),
    ],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts', 'examples/*/test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
})
