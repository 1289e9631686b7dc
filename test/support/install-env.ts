/**
 * The environment for an install as an app makes it (npm or pnpm in a folder outside the workspace):
 * this process's, without the `npm_*` and `pnpm_*` variables the `pnpm test` / `pnpm bench` run that
 * started it exports (its config would steer the install). Used by test/pack-install.test.ts and
 * bench/package.ts.
 */
export function installEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(npm|pnpm)_/i.test(name)))
}
