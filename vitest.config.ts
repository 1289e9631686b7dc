import { fileURLToPath } from 'node:url'
import { configDefaults, defineConfig } from 'vitest/config'

const packageSource = (name: string, file = 'index') =>
  fileURLToPath(new URL(`./packages/${name}/src/${file}.ts`, import.meta.url))

const TEST_FILES = ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts', 'examples/*/test/**/*.test.ts']
const ALONE = TEST_FILES.map((glob) => glob.replace(/\.test\.ts$/, '.alone.test.ts'))

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
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    projects: [
      // Every file in parallel, as usual.
      {
        extends: true,
        test: {
          name: 'suite',
          include: TEST_FILES,
          exclude: [...configDefaults.exclude, ...ALONE],
          sequence: { groupOrder: 0 },
        },
      },
      // Then, with nothing else running, the files that measure the machine's timing as well as the
      // guard's (several processes pacing one account in real time): `*.alone.test.ts`, one at a time.
      {
        extends: true,
        test: { name: 'alone', include: ALONE, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
})
