/**
 * The usage wing's entry (docs/usage-report.md): the recorder the guard wires to its calls and
 * events, the report read without a guard (the CLI), and the report's public types.
 */
export { UsageRecorder, readUsageReport, type UsageHooks } from './recorder.js'
export { parseDuration } from './period.js'
export type * from './types.js'
