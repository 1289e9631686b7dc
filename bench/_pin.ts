// Pinning for the benchmarks that compare CPU per request (`http`, `client`): what is measured runs
// alone on one CPU, everything else (load, simulator, Redis) on another.
import { spawnSync } from 'node:child_process'

/** Pins a process and all its threads to one CPU; false when taskset is missing or refuses. */
export function pin(pid: number | undefined, cpu: number): boolean {
  if (!pid) return false
  return spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' }).status === 0
}
