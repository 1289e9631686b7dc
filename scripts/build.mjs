// Builds every publishable package (ESM + CommonJS + type declarations) with tsup, in dependency order.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const order = ['simulator', 'core', 'express', 'koa']
const tsup = fileURLToPath(new URL('../node_modules/tsup/dist/cli-default.js', import.meta.url))
for (const name of order) {
  const cwd = fileURLToPath(new URL(`../packages/${name}/`, import.meta.url))
  execFileSync(process.execPath, [tsup, '--silent'], { cwd, stdio: 'inherit' })
}
