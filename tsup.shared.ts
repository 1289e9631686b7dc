import type { Options } from 'tsup'

/** The build every package shares: ESM + CommonJS + type declarations for Node 20. */
export function packageBuild(entry: string[] = ['src/index.ts']): Options {
  return {
    entry,
    format: ['esm', 'cjs'],
    dts: { entry: 'src/index.ts' },
    clean: true,
    target: 'node20',
    sourcemap: false,
    tsconfig: '../../tsconfig.base.json',
  }
}
