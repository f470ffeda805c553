// The TCP side of the userspace proxy: accept a redirected connection, pick an endpoint, connect
// (trying the next endpoint when one fails), then copy both ways with backpressure (pump.ts: reads
// into buffers of ours, not a new one per read). Half-close is kept (allowHalfOpen on both sockets),
// a reset on one side is passed on as a reset to the other, and both sockets are closed at the end.
import { connect, createServer } from 'node:net';
import type { OnReadOpts, Server, Socket } from 'node:net';
import { log } from '../../log.ts';
import type { Endpoint } from '../../model/types.ts';
import type { Balancer, ListenerClass } from './balancer.ts';
import type { Listener, ListenerContext } from './listener.ts';
import { bindAddresses } from './listener.ts';
import { Pump, adoptAccepted } from './pump.ts';
import { plainAddress } from '../../model/addr.ts';

/** Timeout of each connection attempt, in order; the length is the number of attempts (as the historic proxy). */
export const DEFAULT_CONNECT_TIMEOUTS_MS: readonly number[] = [250, 500, 1000, 2000];
/** TCP keepalive on both sockets, so that connections to vanished peers do not live forever. */
const KEEPALIVE_DELAY_MS = 60_000;

export interface TcpListenerOptions extends ListenerContext {
  connectTimeoutsMs?: readonly number[];
}

export interface TcpStats {
  accepted: number;
  /** Connections that reached an endpoint. */
  proxied: number;
  /** Connection attempts to endpoints that failed (refused, unreachable, timed out). */
  dialFailures: number;
  /** Client connections reset because no endpoint could be reached. */
  rejected: number;
}

function listen(server: Server, host: string, port: number, ipv6Only: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    server.listen({ host, port, ipv6Only, backlog: 4096, exclusive: true }, () => {
      server.removeListener('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

/** One client connection and, once connected, its upstream connection. */
interface Conn {
  client: Socket;
  /** Copies client to upstream. */
  forward: Pump;
  /** The client socket reads through forward.onread (see adoptAccepted). */
  adopted: boolean;
  upstream: Socket | null;
  /** The client went away (while we were still connecting for it, possibly). */
  gone: boolean;
  /** Aborts the connection attempt in progress. */
  abortDial: (() => void) | null;
}

/**
 * One connection attempt, reading through `onread`; resolves with the connected socket, or null after a
 * failure, a timeout or an abort.
 */
function dial(ep: Endpoint, timeoutMs: number, conn: Conn, onread: OnReadOpts): Promise<Socket | null> {
  return new Promise((resolve) => {
    const socket = connect({
      host: ep.ip,
      port: ep.port,
      allowHalfOpen: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_DELAY_MS,
      onread,
    });
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      conn.abortDial = null;
      socket.removeListener('connect', onConnect);
      socket.removeListener('error', onError);
      if (!ok) socket.destroy();
      resolve(ok ? socket : null);
    };
    const onConnect = (): void => finish(true);
    const onError = (): void => finish(false);
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.once('connect', onConnect);
    socket.once('error', onError);
    conn.abortDial = () => finish(false);
  });
}

export class TcpListener implements Listener {
  readonly protocol = 'TCP' as const;
  readonly cls: ListenerClass;
  readonly port: number;
  readonly stats: TcpStats = { accepted: 0, proxied: 0, dialFailures: 0, rejected: 0 };
  readonly #server: Server;
  readonly #balancer: Balancer;
  readonly #timeouts: readonly number[];
  /** Every open socket of ours: accepted clients and their upstream connections. */
  readonly #sockets = new Set<Socket>();
  #clients = 0;

  private constructor(server: Server, port: number, opts: TcpListenerOptions) {
    this.#server = server;
    this.port = port;
    this.cls = opts.cls;
    this.#balancer = opts.balancer;
    this.#timeouts = opts.connectTimeoutsMs ?? DEFAULT_CONNECT_TIMEOUTS_MS;
    server.on('connection', (socket: Socket) => this.#accept(socket));
    server.on('error', (err) => log.error({ event: 'tcp-listener-error', err, port }, 'userspace TCP listener failed'));
  }

  /** Opens a listener on the wildcard address, on a port from `opts.ports`. */
  static async open(opts: TcpListenerOptions): Promise<TcpListener> {
    const any = opts.bindAddress ?? bindAddresses(opts.family).any;
    return opts.ports.bind(async (port) => {
      // pauseOnConnect: the client's bytes wait in the kernel until an endpoint is connected.
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_DELAY_MS });
      try {
        const bound = await listen(server, any, port, opts.family === 'IPv6');
        return new TcpListener(server, bound, opts);
      } catch (e) {
        server.close();
        throw e;
      }
    });
  }

  get hostPort(): number {
    return this.port;
  }

  get active(): number {
    return this.#clients;
  }

  prune(): void {
    /* established connections to removed endpoints carry on, as conntrack keeps them in the kernel modes */
  }

  stop(): void {
    if (this.#server.listening) this.#server.close();
  }

  destroy(): void {
    this.stop();
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  /**
   * Every socket gets one 'error' listener (errors surface as a 'close' with hadError) and one
   * 'close' listener: a side that closed with an error, or before its peer finished sending, takes
   * the other side with it as a reset; a clean close of both directions leaves nothing to do.
   */
  #accept(accepted: Socket): void {
    this.stats.accepted++;
    this.#clients++;
    const forward = new Pump();
    const adopted = adoptAccepted(accepted, forward.onread, true);
    const client = adopted ?? accepted;
    this.#sockets.add(client);
    const conn: Conn = { client, forward, adopted: adopted !== null, upstream: null, gone: false, abortDial: null };
    client.on('error', ignore);
    client.once('close', (hadError) => {
      this.#clients--;
      this.#sockets.delete(client);
      conn.gone = true;
      conn.abortDial?.();
      const up = conn.upstream;
      if (up && !up.destroyed && (hadError || !client.readableEnded)) up.resetAndDestroy();
    });
    void this.#connectUpstream(conn);
  }

  async #connectUpstream(conn: Conn): Promise<void> {
    const { client } = conn;
    // getpeername() only when the choice depends on the client.
    const peer = this.#balancer.needsClient(this.cls) ? plainAddress(client.remoteAddress) : '';
    let failed: Set<string> | null = null;
    for (const timeoutMs of this.#timeouts) {
      // Every endpoint failed once already: go round again (a slow endpoint gets a longer timeout).
      const ep = this.#balancer.pick(this.cls, peer, failed ?? undefined) ?? (failed ? this.#balancer.pick(this.cls, peer) : null);
      if (!ep || conn.gone) break;
      const backward = new Pump();
      const upstream = await dial(ep, timeoutMs, conn, backward.onread);
      if (conn.gone) {
        upstream?.destroy();
        return;
      }
      if (upstream) {
        this.stats.proxied++;
        this.#splice(conn, upstream, backward);
        return;
      }
      this.stats.dialFailures++;
      (failed ??= new Set()).add(ep.id);
      this.#balancer.failed(ep.id);
      log.debug(
        { event: 'endpoint-unreachable', endpoint: ep.id, service: this.#balancer.servicePort.key, timeoutMs },
        'userspace proxy: endpoint unreachable, trying the next',
      );
    }
    if (!conn.gone) {
      this.stats.rejected++;
      log.debug(
        { event: 'no-endpoint-reachable', service: this.#balancer.servicePort.key, failed: failed ? [...failed] : [] },
        'userspace proxy: no endpoint reachable, resetting the client',
      );
      client.resetAndDestroy();
    }
  }

  /** Copies both ways until both directions are finished (see #accept for how closes propagate). */
  #splice(conn: Conn, upstream: Socket, backward: Pump): void {
    const { client } = conn;
    conn.upstream = upstream;
    this.#sockets.add(upstream);
    upstream.on('error', ignore);
    upstream.once('close', (hadError) => {
      this.#sockets.delete(upstream);
      if (!client.destroyed && (hadError || !upstream.readableEnded)) client.resetAndDestroy();
    });
    conn.forward.start(client, upstream, conn.adopted);
    backward.start(upstream, client);
  }
}

function ignore(): void {}
