// A CommonJS app: every package through `require`.
const { run } = require('./suite.cjs')

run(
  'cjs',
  async (name) => require(name),
  (name) => require.resolve(name),
).then(
  (result) => {
    console.log(JSON.stringify(result))
    if (result.failures.length > 0) process.exitCode = 1
  },
  (err) => {
    console.error(err)
    process.exitCode = 1
  },
)
