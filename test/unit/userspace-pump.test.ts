// The userspace proxy's byte copy (src/modes/userspace/pump.ts) on loopback sockets: bytes intact through
// the shared buffer and through own buffers, backpressure from a slow reader, the pool's bound, data read
// before start(), the 'data' fallback, and the accepted-socket adoption on the Node this project runs on.
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Pump, ReadBuffers, adoptAccepted } from '../../src/modes/userspace/pump.ts';

const LO = '127.0.0.1';
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function listening(onConnection: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    s.on('error', () => {});
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, LO, r));
  cleanups.push(() => server.close());
  return { server, port: (server.address() as { port: number }).port };
}

/** A sink that answers "<bytes> <sha256>\n" after the end; `slow`: it pauses 5 ms after every chunk. */
async function sink(slow = false): Promise<number> {
  const { port } = await listening((s) => {
    const hash = createHash('sha256');
    let n = 0;
    s.on('data', (d: Buffer) => {
      n += d.length;
      hash.update(d);
      if (slow) {
        s.pause();
        setTimeout(() => s.resume(), 5);
      }
    });
    s.on('end', () => s.end(`${n} ${hash.digest('hex')}\n`));
    s.resume();
  });
  return port;
}

/**
 * A two-way proxy made of Pumps on `buffers`: each accepted connection adopted, its upstream dialled to
 * `target` with onread. Returns the proxy's port.
 */
async function pumpProxy(buffers: ReadBuffers, target: number, opts: { adopt?: boolean } = {}): Promise<number> {
  const { port } = await listening((accepted) => {
    const forward = new Pump(buffers);
    const adopted = opts.adopt === false ? null : adoptAccepted(accepted, forward.onread, true);
    const client = adopted ?? accepted;
    client.on('error', () => {});
    const backward = new Pump(buffers);
    const upstream = connect({ host: LO, port: target, allowHalfOpen: true, onread: backward.onread });
    upstream.on('error', () => {});
    cleanups.push(() => {
      client.destroy();
      upstream.destroy();
    });
    upstream.once('connect', () => {
      forward.start(client, upstream, adopted !== null);
      backward.start(upstream, client);
    });
  });
  return port;
}

/** Sends `data` (in chunks of `chunk` bytes), half-closes, resolves with the answer. */
function send(port: number, data: Buffer, chunk = 1 << 20): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: LO, port, allowHalfOpen: true });
    let answer = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      answer += d;
    });
    s.on('end', () => {
      s.end();
      resolve(answer.trim());
    });
    s.on('error', reject);
    s.on('connect', () => {
      let offset = 0;
      const pump = (): void => {
        while (offset < data.length) {
          const more = s.write(data.subarray(offset, offset + chunk));
          offset += chunk;
          if (!more) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
  });
}

const closed = (ms = 50): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The most own buffers out on loan at once, sampled every millisecond until the test ends. */
function mostLent(buffers: ReadBuffers): () => number {
  let most = 0;
  const timer = setInterval(() => {
    most = Math.max(most, buffers.lent);
  }, 1);
  cleanups.push(() => clearInterval(timer));
  return () => most;
}

describe('Pump', () => {
  it('carries a bulk stream intact through its own buffer and gives the buffer back at the end', async () => {
    const buffers = new ReadBuffers();
    const most = mostLent(buffers);
    const port = await pumpProxy(buffers, await sink());
    const data = randomBytes(32 << 20);
    expect(await send(port, data)).toBe(`${data.length} ${sha(data)}`);
    expect(most()).toBeGreaterThan(0);
    await closed();
    expect(buffers.lent).toBe(0);
  });

  it('writes nothing twice and loses nothing when the reader behind it is slow (backpressure)', async () => {
    const buffers = new ReadBuffers();
    const port = await pumpProxy(buffers, await sink(true));
    const data = randomBytes(8 << 20);
    expect(await send(port, data)).toBe(`${data.length} ${sha(data)}`);
    await closed();
    expect(buffers.lent).toBe(0);
  });

  it('keeps many connections apart in the shared buffer, also while their writes wait', async () => {
    const buffers = new ReadBuffers();
    // Each connection's bytes go into a PassThrough drained slowly: a written chunk waits there by
    // reference, so a buffer read into again before its write is done would show in the hash.
    const results: Promise<string>[] = [];
    const { port } = await listening((accepted) => {
      const pump = new Pump(buffers);
      const client = adoptAccepted(accepted, pump.onread, true) as Socket;
      cleanups.push(() => client.destroy());
      const out = new PassThrough({ highWaterMark: 4096 });
      const hash = createHash('sha256');
      let n = 0;
      results.push(
        new Promise((resolve) => {
          const drain = (): void => {
            for (let chunk = out.read() as Buffer | null; chunk; chunk = out.read() as Buffer | null) {
              n += chunk.length;
              hash.update(chunk);
            }
            if (!out.readableEnded) setTimeout(drain, 2);
          };
          out.once('end', () => resolve(`${n} ${hash.digest('hex')}`));
          drain();
        }),
      );
      pump.start(client, out);
    });
    // Small writes from 40 clients at once: their reads interleave in the one shared buffer.
    const streams = Array.from({ length: 40 }, (_, i) => randomBytes(100_000 + i * 997));
    await Promise.all(
      streams.map(
        (d) =>
          new Promise<void>((resolve, reject) => {
            const s = connect({ host: LO, port }, () => {
              for (let o = 0; o < d.length; o += 1500) s.write(d.subarray(o, o + 1500));
              s.end(resolve);
            });
            s.on('error', reject);
          }),
      ),
    );
    while (results.length < streams.length) await closed(10);
    expect(await Promise.all(results)).toEqual(expect.arrayContaining(streams.map((d) => `${d.length} ${sha(d)}`)));
    await closed();
  });

  it('lends no more own buffers than its bound; the other bulk streams copy out of the shared buffer', async () => {
    const buffers = new ReadBuffers({ maxOwn: 1 });
    const most = mostLent(buffers);
    const port = await pumpProxy(buffers, await sink(true));
    const streams = Array.from({ length: 4 }, () => randomBytes(4 << 20));
    const answers = await Promise.all(streams.map((d) => send(port, d)));
    expect(answers).toEqual(streams.map((d) => `${d.length} ${sha(d)}`));
    expect(most()).toBe(1);
    await closed();
    expect(buffers.lent).toBe(0);
  });

  it('keeps what a server sends before start() and writes it first', async () => {
    const { port: target } = await listening((s) => {
      s.end('hello first\n');
    });
    const backward = new Pump(new ReadBuffers());
    const upstream = connect({ host: LO, port: target, allowHalfOpen: true, onread: backward.onread });
    cleanups.push(() => upstream.destroy());
    await new Promise<void>((r) => upstream.once('connect', () => r()));
    await closed(100);
    // A stand-in client: a socket pair over loopback.
    let received = '';
    const { port: out } = await listening((s) => {
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        received += d;
      });
      s.resume();
    });
    const client = connect({ host: LO, port: out, allowHalfOpen: true });
    cleanups.push(() => client.destroy());
    await new Promise<void>((r) => client.once('connect', () => r()));
    backward.start(upstream, client);
    await closed(100);
    expect(received).toBe('hello first\n');
  });

  it('also copies from a socket read through data events (an accepted socket that could not be adopted)', async () => {
    const buffers = new ReadBuffers();
    const port = await pumpProxy(buffers, await sink(), { adopt: false });
    const data = randomBytes(4 << 20);
    expect(await send(port, data)).toBe(`${data.length} ${sha(data)}`);
  });
});

describe('adoptAccepted', () => {
  it('moves an accepted connection to a socket that reads into our buffer (on the Node this project runs on)', async () => {
    const buffer = Buffer.alloc(1024);
    const reads: string[] = [];
    let server: Server | null = null;
    const adopted = new Promise<Socket | null>((resolve) => {
      void listening((accepted) => {
        resolve(
          adoptAccepted(
            accepted,
            {
              buffer,
              callback: (n, b) => {
                reads.push(Buffer.from(b.subarray(0, n)).toString());
                return true;
              },
            },
            true,
          ),
        );
      }).then((l) => {
        server = l.server;
        const c = connect({ host: LO, port: l.port });
        c.on('error', () => {});
        cleanups.push(() => c.destroy());
        c.on('connect', () => c.write('ping'));
      });
    });
    const socket = await adopted;
    expect(socket).not.toBeNull();
    cleanups.push(() => socket?.destroy());
    // Paused until resumed, as Pump.start does.
    await closed();
    expect(reads).toEqual([]);
    socket?.resume();
    await closed();
    expect(reads).toEqual(['ping']);
    // The server no longer counts the husk.
    const count = await new Promise<number>((r) => (server as unknown as Server).getConnections((_e, n) => r(n)));
    expect(count).toBe(0);
  });
});
