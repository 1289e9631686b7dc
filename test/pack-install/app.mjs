// An ESM app: every package through `import`.
import { run } from './suite.cjs'

const result = await run(
  'esm',
  (name) => import(name),
  (name) => import.meta.resolve(name),
)
console.log(JSON.stringify(result))
if (result.failures.length > 0) process.exitCode = 1
