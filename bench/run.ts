// `pnpm bench <name>` runs bench/<name>.ts, which prints its own table. `pnpm bench` lists them.
import { readdirSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

const folder = fileURLToPath(new URL('.', import.meta.url))
const names = readdirSync(folder)
  .filter((file) => file.endsWith('.ts') && file !== 'run.ts' && !file.startsWith('_'))
  .map((file) => file.replace(/\.ts$/, ''))
const name = process.argv[2]
if (!name || !names.includes(name)) {
  console.log(`usage: pnpm bench <name>   where <name> is one of: ${names.join(', ') || '(none yet)'}`)
  process.exit(name ? 1 : 0)
}
await import(pathToFileURL(`${folder}${name}.ts`).href)
