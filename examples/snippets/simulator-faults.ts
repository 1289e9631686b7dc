// packages/simulator/README.md, "Faults". Compiled only.
import { startSimulator } from '@qwen-guard/simulator'

const sim = await startSimulator({ accounts: [{ id: 'b', keys: ['sk-b'] }] })
// #region readme
const handle = sim.inject({ kind: 'stream-error', model: 'qwen-plus', probability: 0.1 })
sim.inject({ kind: 'hang', account: 'b', times: 1 })
sim.clearFaults(handle) // or clearFaults() for all
// #endregion readme
