// Copying one direction of a proxied TCP connection without a new buffer per read.
//
// Node's default read path hands every read (at most 64 KiB) to JavaScript in a newly allocated buffer.
// Under one bulk stream that is thousands of allocations a second outside the JavaScript heap, and V8
// answers that growth with major garbage collections over the whole heap: measured, a quarter of the
// proxy's CPU went to marking and sweeping (docs/benchmarks.md). Node's `onread` option reads into a
// buffer of ours instead, and a buffer used over and over also stays in the CPU cache.
//
// Memory does not grow with the number of connections: every connection reads into one shared buffer,
// and what it read is copied out before anything else can read into it (a small copy for the short
// exchanges most connections make). A connection whose reads come in large is moving bulk data: it is
// lent a buffer of its own from a bounded pool and writes straight out of it, reading nothing more
// until that write has left the buffer. Its reads getting small again, it goes back to the shared buffer.
import { Socket } from 'node:net';
import type { OnReadOpts, SocketConstructorOpts } from 'node:net';
import type { Readable, Writable } from 'node:stream';

/** The buffer every connection reads into: Node's own read size. */
const SHARED_BYTES = 64 << 10;
/**
 * A bulk connection's own buffer. Larger reads and writes mean fewer system calls and fewer wakeups of
 * the processes on either side, each of which can preempt the proxy. Measured (docs/benchmarks.md): 512 KiB
 * carried more than 256 KiB in nearly every round; 1 MiB as much as 512 KiB for 13-20% less CPU per byte;
 * 2 MiB gained nothing more.
 */
const OWN_BYTES = 1 << 20;
/** At most this many own buffers at once (16 MiB); further bulk connections copy out of the shared buffer. */
const MAX_OWN = 16;
/** Own buffers kept for reuse once given back (the rest is left to the garbage collector). */
const KEEP_FREE = 4;
/** A read at least this large means bulk data: the connection gets (or keeps) a buffer of its own. */
const BULK_READ_BYTES = 32 << 10;

/** The read buffers of this thread: the shared one and the pool of own buffers. */
export class ReadBuffers {
  readonly shared: Buffer;
  readonly ownBytes: number;
  readonly #max: number;
  readonly #free: Buffer[] = [];
  #lent = 0;

  constructor(opts: { sharedBytes?: number; ownBytes?: number; maxOwn?: number } = {}) {
    this.shared = Buffer.allocUnsafeSlow(opts.sharedBytes ?? SHARED_BYTES);
    this.ownBytes = opts.ownBytes ?? OWN_BYTES;
    this.#max = opts.maxOwn ?? MAX_OWN;
  }

  /** Own buffers out on loan (for tests). */
  get lent(): number {
    return this.#lent;
  }

  /** An own buffer, or null when the pool has lent all it may. */
  lend(): Buffer | null {
    if (this.#lent >= this.#max) return null;
    this.#lent++;
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.ownBytes);
  }

  /** Takes back a buffer that no read or write can touch any more. */
  give(b: Buffer): void {
    this.#lent--;
    if (this.#free.length < KEEP_FREE) this.#free.push(b);
  }
}

/** The buffers of the proxy's thread, shared by every listener. */
export const readBuffers = new ReadBuffers();

/**
 * Copies what `from` reads into `to`, with backpressure: while `to` has anything left to write, `from`
 * reads nothing (so a buffer being written out is never read into). The end of `from` half-closes `to`.
 * Create the reading socket with `pump.onread`, then call start() once both sockets are connected.
 */
export class Pump {
  readonly onread: OnReadOpts;
  readonly #buffers: ReadBuffers;
  #from: Readable | null = null;
  #to: Writable | null = null;
  /** This direction's own buffer, or null while it reads into the shared one. */
  #own: Buffer | null = null;
  /** An own buffer given up while a write out of it was still under way: back to the pool once written. */
  #held: Buffer | null = null;
  /** `from` is paused until `to` has written everything. */
  #waiting = false;
  /** Bytes read before start() (copied out), written first. */
  #early: Buffer[] = [];

  constructor(buffers: ReadBuffers = readBuffers) {
    this.#buffers = buffers;
    this.onread = {
      // Called before every read: where the next read of this socket lands.
      buffer: () => this.#own ?? this.#buffers.shared,
      // false stops reading (only before start(), when there is no socket to pause yet).
      callback: (n, b) => this.#read(n, b as Buffer),
    };
  }

  /**
   * Starts copying. `viaOnread`: `from` was made with this.onread; otherwise (an accepted socket Node
   * would not hand over, see adoptAccepted) it is read through 'data' events, a new buffer per read.
   */
  start(from: Readable, to: Writable, viaOnread = true): void {
    this.#from = from;
    this.#to = to;
    for (const chunk of this.#early.splice(0)) this.#write(chunk);
    if (!viaOnread) from.on('data', (chunk: Buffer) => void this.#write(chunk));
    if (from.readableEnded) to.end();
    else {
      from.once('end', () => {
        if (!to.destroyed) to.end();
      });
    }
    // Own buffers go back once neither socket can touch them: both have closed.
    let open = 2;
    const closed = (): void => {
      if (--open === 0) this.#release();
    };
    from.once('close', closed);
    to.once('close', closed);
    if (!this.#waiting) from.resume();
  }

  /** One read of `n` bytes into `b`; false: read no more for now. */
  #read(n: number, b: Buffer): boolean {
    if (b !== this.#own) {
      // The shared buffer: every connection reads into it, so its bytes are copied out at once.
      const chunk = Buffer.allocUnsafe(n);
      b.copy(chunk, 0, 0, n);
      if (n >= BULK_READ_BYTES && this.#to && !this.#own) this.#own = this.#buffers.lend();
      return this.#write(chunk);
    }
    const to = this.#to as Writable;
    to.write(b.subarray(0, n), this.#written);
    const pending = to.writableLength > 0;
    if (n < BULK_READ_BYTES) {
      this.#own = null;
      if (pending) this.#held = b;
      else this.#buffers.give(b);
    }
    if (pending) this.#pause();
    return true;
  }

  /** Writes a chunk that no read will overwrite; false: read no more for now. */
  #write(chunk: Buffer): boolean {
    const to = this.#to;
    if (!to) {
      // Read before start() (a server that speaks first): kept for start(), no reading until then.
      this.#early.push(chunk);
      return false;
    }
    to.write(chunk, this.#written);
    if (to.writableLength > 0) this.#pause();
    return true;
  }

  #pause(): void {
    if (this.#waiting) return;
    this.#waiting = true;
    this.#from?.pause();
  }

  /** After each write: once `to` has written everything, buffers are free and `from` may read again. */
  readonly #written = (): void => {
    const to = this.#to;
    if (!to || to.writableLength > 0 || to.destroyed) return;
    if (this.#held) {
      this.#buffers.give(this.#held);
      this.#held = null;
    }
    if (this.#waiting) {
      this.#waiting = false;
      this.#from?.resume();
    }
  };

  #release(): void {
    for (const b of [this.#own, this.#held]) if (b) this.#buffers.give(b);
    this.#own = null;
    this.#held = null;
  }
}

/** Node's own options of the Socket constructor that net.Server uses for the sockets it accepts. */
interface HandleOptions extends SocketConstructorOpts {
  handle: object;
  pauseOnCreate: boolean;
}

/**
 * An accepted connection as a socket that reads through `onread`, or null when this Node does not
 * allow it. net.Server makes the sockets it accepts itself and has no `onread` option, so the
 * connection's handle moves to a socket of ours, made with the constructor options net.Server uses
 * (`handle`, `pauseOnCreate`: reading starts with Pump.start). The socket net.Server made is destroyed
 * without its handle, which only settles the server's count of connections. Socket options already
 * applied to the connection (no delay, keepalive) stay with it.
 */
export function adoptAccepted(accepted: Socket, onread: OnReadOpts, allowHalfOpen: boolean): Socket | null {
  const husk = accepted as unknown as { _handle?: { readStart?: unknown } | null };
  const handle = husk._handle;
  if (!handle || typeof handle.readStart !== 'function') return null;
  const options: HandleOptions = { handle, pauseOnCreate: true, allowHalfOpen, onread };
  const socket = new Socket(options);
  husk._handle = null;
  accepted.destroy();
  return socket;
}
