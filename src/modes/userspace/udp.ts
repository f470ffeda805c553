// The UDP side of the userspace proxy: one session per client address and port, each with its own
// socket connected to the chosen endpoint. Replies go back through the socket the client's datagram
// arrived on, so conntrack undoes the REDIRECT and the client sees them come from the service address.
//
// Two sockets per listener: the wildcard one receives what PREROUTING redirects (to the incoming
// interface's address), and a loopback one receives the node's own traffic, which OUTPUT redirects to
// the loopback address. A wildcard socket answering the node itself would pick the node's address as
// source, not the loopback address conntrack expects, and the reply would never be un-NATed.
// IPv6 works the same way (udp6 sockets on :: and ::1, IPv6-only, so the IPv4 proxier's sockets may hold the
// same port numbers). Replies from the wildcard socket take the source address the kernel selects towards
// the client, which is the address REDIRECT chose (the incoming interface's first address of that scope)
// as long as the interface has one address per scope; Node cannot choose the source of a datagram itself.
import { createSocket } from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { log } from '../../log.ts';
import type { Endpoint } from '../../model/types.ts';
import type { Balancer, ListenerClass } from './balancer.ts';
import type { Listener, ListenerContext } from './listener.ts';
import { bindAddresses } from './listener.ts';
import { plainAddress } from '../../model/addr.ts';

export const DEFAULT_UDP_IDLE_TIMEOUT_MS = 10_000;
export const DEFAULT_UDP_MAX_SESSIONS = 16_384;
/** Datagrams kept per session while its upstream socket connects. */
const MAX_PENDING = 64;
/** Asked for both directions; the kernel caps it at net.core.{r,w}mem_max. */
const SOCKET_BUFFER_BYTES = 4 << 20;
/** How often idle sessions are looked for: a session ends within this long after its idle timeout. */
const REAP_INTERVAL_MS = 1000;

/** One timer for every open listener (a cluster can have thousands of UDP service ports). */
const openListeners = new Set<UdpListener>();
let reaper: NodeJS.Timeout | null = null;

function track(l: UdpListener): void {
  openListeners.add(l);
  if (!reaper) {
    reaper = setInterval(() => {
      for (const x of openListeners) x.reap();
    }, REAP_INTERVAL_MS);
    reaper.unref();
  }
}

function untrack(l: UdpListener): void {
  openListeners.delete(l);
  if (openListeners.size === 0 && reaper) {
    clearInterval(reaper);
    reaper = null;
  }
}

export interface UdpListenerOptions extends ListenerContext {
  idleTimeoutMs?: number;
  maxSessions?: number;
  now?: () => number;
}

export interface UdpStats {
  sessionsOpened: number;
  /** Datagrams from clients that found no endpoint. */
  dropped: number;
  datagramsIn: number;
  datagramsOut: number;
}

interface Session {
  key: string;
  /** The socket the client's datagrams arrive on, which must send the replies. */
  via: Socket;
  clientAddress: string;
  clientPort: number;
  endpoint: Endpoint;
  upstream: Socket;
  lastActive: number;
  /** Datagrams waiting for the upstream socket to connect; null once connected. */
  pending: Buffer[] | null;
  closed: boolean;
}

function bindSocket(type: 'udp4' | 'udp6', address: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type, ipv6Only: type === 'udp6', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
    const onError = (e: Error): void => {
      socket.close();
      reject(e);
    };
    socket.once('error', onError);
    socket.bind({ address, port, exclusive: true }, () => {
      socket.removeListener('error', onError);
      resolve(socket);
    });
  });
}

export class UdpListener implements Listener {
  readonly protocol = 'UDP' as const;
  readonly cls: ListenerClass;
  readonly port: number;
  readonly hostPort: number;
  readonly stats: UdpStats = { sessionsOpened: 0, dropped: 0, datagramsIn: 0, datagramsOut: 0 };
  readonly #any: Socket;
  readonly #loopback: Socket;
  readonly #balancer: Balancer;
  readonly #type: 'udp4' | 'udp6';
  readonly #idleMs: number;
  readonly #maxSessions: number;
  readonly #now: () => number;
  /** Sessions by `<socket>|<address>|<port>`, least recently active first. */
  readonly #sessions = new Map<string, Session>();
  #stopped = false;

  private constructor(any: Socket, loopback: Socket, opts: UdpListenerOptions) {
    this.#any = any;
    this.#loopback = loopback;
    this.port = any.address().port;
    this.hostPort = loopback.address().port;
    this.cls = opts.cls;
    this.#balancer = opts.balancer;
    this.#type = opts.family === 'IPv6' ? 'udp6' : 'udp4';
    this.#idleMs = opts.idleTimeoutMs ?? DEFAULT_UDP_IDLE_TIMEOUT_MS;
    this.#maxSessions = opts.maxSessions ?? DEFAULT_UDP_MAX_SESSIONS;
    this.#now = opts.now ?? Date.now;
    for (const socket of [any, loopback]) {
      socket.on('message', (msg, rinfo) => this.#fromClient(socket, msg, rinfo));
      socket.on('error', (err) => log.warn({ event: 'udp-listener-error', err, port: socket.address().port }, 'userspace UDP listener socket error'));
    }
    track(this);
  }

  /** Opens the wildcard and loopback sockets on ports from `opts.ports`. */
  static async open(opts: UdpListenerOptions): Promise<UdpListener> {
    const type = opts.family === 'IPv6' ? 'udp6' : 'udp4';
    const { any, loopback } = bindAddresses(opts.family);
    const anySocket = await opts.ports.bind((port) => bindSocket(type, opts.bindAddress ?? any, port));
    try {
      const loopbackSocket = await opts.ports.bind((port) => bindSocket(type, loopback, port));
      return new UdpListener(anySocket, loopbackSocket, opts);
    } catch (e) {
      anySocket.close();
      throw e;
    }
  }

  get active(): number {
    return this.#sessions.size;
  }

  /** Ends sessions whose endpoint is no longer a candidate for their client: their next datagram picks again. */
  prune(): void {
    for (const s of [...this.#sessions.values()]) {
      const { endpoints } = this.#balancer.candidates(this.cls, s.clientAddress);
      if (!endpoints.some((e) => e.id === s.endpoint.id)) this.#close(s);
    }
  }

  /** Ends sessions idle for longer than the idle timeout (a shared timer runs it every second). */
  reap(): void {
    const deadline = this.#now() - this.#idleMs;
    for (const s of this.#sessions.values()) {
      if (s.lastActive > deadline) break;
      this.#close(s);
    }
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    untrack(this);
    for (const s of [...this.#sessions.values()]) this.#close(s);
    this.#any.close();
    this.#loopback.close();
  }

  destroy(): void {
    this.stop();
  }

  #touch(s: Session): void {
    s.lastActive = this.#now();
    this.#sessions.delete(s.key);
    this.#sessions.set(s.key, s);
  }

  #fromClient(via: Socket, msg: Buffer, rinfo: RemoteInfo): void {
    this.stats.datagramsIn++;
    const key = `${via === this.#any ? 'a' : 'l'}|${rinfo.address}|${rinfo.port}`;
    let s = this.#sessions.get(key);
    if (s) this.#touch(s);
    else {
      const session = this.#open(via, key, rinfo);
      if (!session) {
        this.stats.dropped++;
        return;
      }
      s = session;
    }
    if (s.pending) {
      if (s.pending.length < MAX_PENDING) s.pending.push(msg);
    } else {
      s.upstream.send(msg);
    }
  }

  #open(via: Socket, key: string, rinfo: RemoteInfo): Session | null {
    const client = plainAddress(rinfo.address);
    const endpoint = this.#balancer.pick(this.cls, client);
    if (!endpoint) return null;
    const upstream = createSocket({ type: this.#type });
    const s: Session = {
      key,
      via,
      clientAddress: client,
      clientPort: rinfo.port,
      endpoint,
      upstream,
      lastActive: this.#now(),
      pending: [],
      closed: false,
    };
    if (this.#sessions.size >= this.#maxSessions) {
      const oldest = this.#sessions.values().next().value;
      if (oldest) this.#close(oldest);
    }
    this.#sessions.set(key, s);
    this.stats.sessionsOpened++;
    upstream.on('message', (reply) => {
      if (s.closed) return;
      this.#touch(s);
      this.stats.datagramsOut++;
      s.via.send(reply, s.clientPort, rinfo.address, (err) => {
        if (err) log.debug({ event: 'udp-reply-failed', err, client: s.clientAddress }, 'userspace proxy: reply to UDP client failed');
      });
    });
    // ECONNREFUSED here is the endpoint's ICMP port unreachable: end the session, the next datagram picks again.
    upstream.on('error', (err) => {
      log.debug({ event: 'udp-session-failed', err, endpoint: endpoint.id }, 'userspace proxy: UDP session to endpoint failed');
      this.#close(s);
    });
    upstream.connect(endpoint.port, endpoint.ip, () => {
      if (s.closed) return;
      const pending = s.pending ?? [];
      s.pending = null;
      for (const m of pending) upstream.send(m);
    });
    return s;
  }

  #close(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    s.pending = null;
    if (this.#sessions.get(s.key) === s) this.#sessions.delete(s.key);
    s.upstream.close();
  }
}
