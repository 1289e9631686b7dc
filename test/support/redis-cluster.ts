/**
 * A throwaway 3-node Redis Cluster on loopback, from the same Debian `redis-server` as
 * redis-server.ts: three masters in cluster mode (no replicas, persistence off, each in its own
 * temporary directory), joined by `redis-cli --cluster create`, ready once every node reports
 * `cluster_state:ok` and agrees on the slot map. Takes about 2 s (redis-cli waits for the nodes to
 * join in 1 s steps). Faults: `pause(i)` / `resume(i)` send SIGSTOP / SIGCONT to one node, `kill(i)`
 * SIGKILL.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Cluster, Redis, type ClusterOptions } from 'ioredis'
import { freePort } from './redis-server.js'

const run = promisify(execFile)

/** One master of the cluster. */
export interface ClusterNode {
  host: '127.0.0.1'
  port: number
  pid: number
}

export interface RedisCluster {
  /** The three masters, in start order. */
  nodes: readonly ClusterNode[]
  /** Startup nodes for `new Cluster(...)`. */
  startupNodes: Array<{ host: string; port: number }>
  /** A new ioredis Cluster client on this cluster; disconnected by `stop()`. */
  client(options?: ClusterOptions): Cluster
  /** The master serving `key`'s hash slot (CLUSTER KEYSLOT, then the slot map). */
  nodeOf(key: string): Promise<ClusterNode>
  /** SIGSTOP to node `index`: its connections stay open and nothing answers. */
  pause(index: number): void
  /** SIGCONT to node `index`. */
  resume(index: number): void
  /** SIGKILL to node `index`, resolved once it has exited (it stays dead: no restart). */
  kill(index: number): Promise<void>
  /** Stops every node (resumed first) and every client made by `client()`, and removes the directory. */
  stop(): Promise<void>
}

export interface RedisClusterOptions {
  /**
   * `cluster-node-timeout`: how long a node may not answer before the others mark it failed and the
   * cluster refuses commands (CLUSTERDOWN; no replicas to fail over to). Default 15,000 ms (Redis'
   * own default): a fault test's pause must stay well below it to test one node stalled rather
   * than the cluster down.
   */
  nodeTimeoutMs?: number
}

const READY_TIMEOUT_MS = 15_000

function startNode(port: number, busPort: number, dir: string, nodeTimeoutMs: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--cluster-port',
      String(busPort), // explicit: the default, port + 10,000, may be taken or beyond 65,535
      '--bind',
      '127.0.0.1',
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      `nodes-${port}.conf`,
      '--cluster-node-timeout',
      String(nodeTimeoutMs),
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'no',
      '--protected-mode',
      'yes',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cluster node on port ${port} did not start within 10 s`)), 10_000)
    let output = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes('Ready to accept connections')) {
        clearTimeout(timer)
        resolve(child)
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`cluster node on port ${port} exited with code ${code}: ${output.slice(-500)}`))
    })
  })
}

/** True when every node says `cluster_state:ok` and knows all three masters. */
async function clusterReady(ports: readonly number[]): Promise<boolean> {
  const answers = await Promise.all(
    ports.map(async (port) => {
      const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 })
      try {
        await redis.connect()
        const info = String(await redis.call('CLUSTER', 'INFO'))
        return info.includes('cluster_state:ok') && info.includes('cluster_known_nodes:3')
      } catch {
        return false
      } finally {
        redis.disconnect()
      }
    }),
  )
  return answers.every(Boolean)
}

type SlotRange = [from: number, to: number, master: [host: string, port: number]]

async function readSlotMap(port: number): Promise<SlotRange[]> {
  const redis = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
  try {
    return (await redis.call('CLUSTER', 'SLOTS')) as SlotRange[]
  } finally {
    redis.disconnect()
  }
}

/** Starts three cluster-mode redis-servers on free loopback ports and joins them into one cluster. */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 15_000
  const dir = await mkdtemp(join(tmpdir(), 'qg-cluster-'))
  const children: ChildProcess[] = []
  const clients: Cluster[] = []
  const stop = async () => {
    for (const client of clients) client.disconnect()
    await Promise.all(
      children.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return
        child.kill('SIGCONT')
        child.kill('SIGTERM')
        await once(child, 'exit')
      }),
    )
    await rm(dir, { recursive: true, force: true })
  }
  try {
    // Six distinct free ports: three client ports and three cluster-bus ports.
    const ports = new Set<number>()
    while (ports.size < 6) ports.add(await freePort())
    const [p1, p2, p3, b1, b2, b3] = [...ports] as [number, number, number, number, number, number]
    const clientPorts = [p1, p2, p3]
    const busPorts = [b1, b2, b3]
    children.push(
      ...(await Promise.all(clientPorts.map((port, i) => startNode(port, busPorts[i] as number, dir, nodeTimeoutMs)))),
    )
    await run('redis-cli', [
      '--cluster',
      'create',
      ...clientPorts.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ])
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (!(await clusterReady(clientPorts))) {
      if (Date.now() > deadline) throw new Error(`the cluster on ${clientPorts.join(', ')} did not become ready`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const nodes: ClusterNode[] = clientPorts.map((port, i) => ({
      host: '127.0.0.1',
      port,
      pid: children[i]?.pid ?? 0,
    }))
    const startupNodes = nodes.map(({ host, port }) => ({ host, port }))
    const paused = new Set<number>()
    const slotMap = await readSlotMap(p1)
    const child = (index: number) => {
      const found = children[index]
      if (!found) throw new Error(`no cluster node ${index}`)
      return found
    }
    return {
      nodes,
      startupNodes,
      client(clientOptions) {
        const cluster = new Cluster(startupNodes, clientOptions)
        clients.push(cluster)
        return cluster
      },
      async nodeOf(key) {
        // Asked of a node that is not paused; the slot map was read once the cluster was ready.
        const asked = nodes.find((_, i) => !paused.has(i)) ?? nodes[0]!
        const probe = new Redis({ port: asked.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
        try {
          const slot = Number(await probe.call('CLUSTER', 'KEYSLOT', key))
          const range = slotMap.find(([from, to]) => slot >= from && slot <= to)
          const node = nodes.find((n) => n.port === Number(range?.[2][1]))
          if (!node) throw new Error(`no node serves slot ${slot}`)
          return node
        } finally {
          probe.disconnect()
        }
      },
      pause(index) {
        child(index).kill('SIGSTOP')
        paused.add(index)
      },
      resume(index) {
        child(index).kill('SIGCONT')
        paused.delete(index)
      },
      async kill(index) {
        const dying = child(index)
        if (dying.exitCode !== null || dying.signalCode !== null) return
        const exited = once(dying, 'exit')
        dying.kill('SIGKILL')
        await exited
        paused.add(index) // never asked again
      },
      stop,
    }
  } catch (error) {
    await stop()
    throw error
  }
}
