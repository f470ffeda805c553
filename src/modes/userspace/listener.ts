// What the proxier needs from a TCP or UDP listener, and how listener ports are chosen.
import type { IPFamily } from '../../model/types.ts';
import type { Balancer, ListenerClass } from './balancer.ts';

export interface Listener {
  readonly protocol: 'TCP' | 'UDP';
  readonly cls: ListenerClass;
  /** Port of the socket bound to the wildcard address: where PREROUTING redirects. */
  readonly port: number;
  /** Where OUTPUT (the node's own traffic) redirects: `port` for TCP, the loopback socket's port for UDP. */
  readonly hostPort: number;
  /** Open client connections (TCP) or sessions (UDP). */
  readonly active: number;
  /** Forgets state tied to endpoints its clients may no longer use (UDP sessions); TCP connections stay. */
  prune(): void;
  /** Stops taking new traffic. TCP connections already established carry on; UDP sessions end. */
  stop(): void;
  /** Stops and closes every connection and session. */
  destroy(): void;
}

export interface ListenerContext {
  family: IPFamily;
  balancer: Balancer;
  cls: ListenerClass;
  ports: PortAllocator;
  /** Address of the socket that PREROUTING redirects reach (default: the family's wildcard address). */
  bindAddress?: string;
}

/** The wildcard and loopback addresses of a family. */
export function bindAddresses(family: IPFamily): { any: string; loopback: string } {
  return family === 'IPv6' ? { any: '::', loopback: '::1' } : { any: '0.0.0.0', loopback: '127.0.0.1' };
}

export interface PortRange {
  min: number;
  max: number;
}

/**
 * Chooses listener ports: the kernel's choice (port 0) without a range, otherwise the next free port
 * of the range, round robin, so that a port just given up is not taken again at once.
 */
export class PortAllocator {
  readonly range: PortRange | null;
  #cursor = 0;

  constructor(range: PortRange | null) {
    if (range && !(Number.isInteger(range.min) && Number.isInteger(range.max) && range.min >= 1 && range.max <= 65535 && range.min <= range.max)) {
      throw new Error(`invalid listener port range ${range.min}-${range.max}`);
    }
    this.range = range;
  }

  /** Runs `bind(port)` until a port is free; resolves with what bind resolved. */
  async bind<T>(bind: (port: number) => Promise<T>): Promise<T> {
    if (!this.range) return bind(0);
    const { min, max } = this.range;
    const size = max - min + 1;
    for (let i = 0; i < size; i++) {
      const port = min + ((this.#cursor + i) % size);
      try {
        const result = await bind(port);
        this.#cursor = (port - min + 1) % size;
        return result;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
      }
    }
    throw new Error(`no free listener port in ${min}-${max}`);
  }
}
