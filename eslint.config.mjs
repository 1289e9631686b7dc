// ESLint for the whole workspace (flat config): the recommended JavaScript and typescript-eslint rules,
// plus the two type-aware rules that catch real faults here (a promise nobody awaits or handles).
// Run with `pnpm lint`; CI runs it before the tests.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      '**/dist/**',
      'coverage/**',
      'test/pack-install/**', // installed and run outside the workspace, with its own dependencies
      'examples/chat-backend/public/**', // the browser page's script, served as is
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['tsup.shared.ts', 'packages/*/tsup.config.ts'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // `_name` marks a parameter a signature needs but the body does not (Express's 4-argument error
      // handler, a fetch stand-in); `const { secret: _secret, ...rest }` drops a field.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // `declare global { namespace Express { ... } }` is how an app types req.qwen (the README's snippets).
      '@typescript-eslint/no-namespace': ['error', { allowDeclarations: true }],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
    },
  },
  {
    // The packages run inside the app's process: nothing in them may turn on async hooks, which on
    // Node 20 slow every promise of the whole app (AsyncLocalStorage cost ~45 CPU µs per guarded
    // call in `pnpm bench client`; upstream/send-delays.ts matches sends without it).
    files: ['packages/*/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: ['node:async_hooks', 'async_hooks'].map((name) => ({
            name,
            message: 'async hooks (AsyncLocalStorage included) slow every promise of the host app on Node 20.',
          })),
        },
      ],
    },
  },
  {
    files: ['**/*.mjs', '**/*.cjs', '**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
)
