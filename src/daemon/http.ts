// Every HTTP server the daemon opens (health on 0.0.0.0:10256, metrics, one per health-check node port) is
// reachable by anyone who can reach the node. Unbounded, ~20,000 idle connections used up the process's file
// descriptors, and the next spawn of iptables-restore failed. So every server here:
//   - shares one connection budget with the others (a connection over it is closed at once);
//   - closes a connection that sends nothing, or no complete request headers, within a few seconds;
//   - bounds a request's time and keeps idle keep-alive connections briefly.
import { createServer, type RequestListener, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { log } from '../log.ts';

export interface ServerLimits {
  /** Open connections across every server sharing the budget. */
  maxConnections: number;
  /** Open connections from one source address: one flooding client cannot take the whole budget from kubelet's probes. */
  maxPerSource: number;
  /** A connection without complete request headers for this long is closed. */
  headersTimeoutMs: number;
  /** A request (headers and body) must complete within this. */
  requestTimeoutMs: number;
  /** An idle connection (no bytes either way) is closed after this. */
  idleTimeoutMs: number;
}

/**
 * Far below the process's descriptor limit (20,000 on these nodes; kube-proxy's pods have similar limits),
 * far above what kubelet, a load balancer's health checks and Prometheus need.
 */
export const DEFAULT_LIMITS: ServerLimits = { maxConnections: 512, maxPerSource: 32, headersTimeoutMs: 5_000, requestTimeoutMs: 10_000, idleTimeoutMs: 5_000 };

/** Open connections of a group of servers, and what was refused for lack of room. */
export class ConnectionBudget {
  readonly limits: ServerLimits;
  open = 0;
  refused = 0;
  readonly #bySource = new Map<string, number>();
  #warnedAt = 0;

  constructor(limits: ServerLimits = DEFAULT_LIMITS) {
    this.limits = limits;
  }

  /** Admits a connection or closes it; admitted ones give their room back when they close. */
  admit(socket: Socket, server: string): void {
    const source = socket.remoteAddress ?? '';
    const fromSource = this.#bySource.get(source) ?? 0;
    if (this.open >= this.limits.maxConnections || fromSource >= this.limits.maxPerSource) {
      this.refused++;
      socket.destroy();
      const now = Date.now();
      if (now - this.#warnedAt > 10_000) {
        this.#warnedAt = now;
        log.warn({ event: 'connections-refused', server, open: this.open, refused: this.refused }, 'too many open connections: new ones are closed');
      }
      return;
    }
    this.open++;
    this.#bySource.set(source, fromSource + 1);
    socket.once('close', () => {
      this.open--;
      const n = (this.#bySource.get(source) ?? 1) - 1;
      if (n === 0) this.#bySource.delete(source);
      else this.#bySource.set(source, n);
    });
  }
}

/** The budget every daemon server shares unless told otherwise. */
export const daemonBudget = new ConnectionBudget();

/** An HTTP server with the daemon's bounds. */
export function boundedServer(name: string, handler: RequestListener, budget: ConnectionBudget = daemonBudget): Server {
  const { limits } = budget;
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.idleTimeoutMs,
      connectionsCheckingInterval: 1_000,
    },
    handler,
  );
  // Idle sockets, including ones that never send a byte (headersTimeout only runs once a request starts).
  server.setTimeout(limits.idleTimeoutMs, (socket) => socket.destroy());
  server.on('connection', (socket: Socket) => budget.admit(socket, name));
  // A client resetting mid-request must not surface as an unhandled error.
  server.on('clientError', (_err, socket) => socket.destroy());
  return server;
}

/** Listens; resolves once listening, rejects when the address cannot be bound (busy, not local). */
export function listen(server: Server, host: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      log.info({ event: 'listening', server: what, address: `${host}:${port}` }, `${what} server listening`);
      resolve();
    });
  });
}
