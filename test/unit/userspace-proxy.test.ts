// The proxy core on real sockets, over loopback only (no kernel rules: clients connect to the
// listener's port directly). The redirect path is covered by test/e2e/userspace-*.test.ts.
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Endpoint } from '../../src/model/types.ts';
import { Balancer } from '../../src/modes/userspace/balancer.ts';
import { PortAllocator } from '../../src/modes/userspace/listener.ts';
import { SourceClassifier } from '../../src/modes/userspace/sources.ts';
import { TcpListener } from '../../src/modes/userspace/tcp.ts';
import { UdpListener } from '../../src/modes/userspace/udp.ts';
import { endpoint, servicePort } from './userspace-fixtures.ts';

const LO = '127.0.0.1';
const clients = new SourceClassifier({ family: 'IPv4', clusterCIDRs: [] });
const clients6 = new SourceClassifier({ family: 'IPv6', clusterCIDRs: [] });
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

type Behaviour = 'hello' | 'echo' | 'halfclose' | 'reset';

async function backend(name: string, behaviour: Behaviour): Promise<{ ep: Endpoint; server: Server; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    seen.push(name);
    if (behaviour === 'hello') s.end(`${name}\n`);
    else if (behaviour === 'echo') s.pipe(s);
    else if (behaviour === 'reset') s.once('data', () => s.resetAndDestroy());
    else {
      let n = 0;
      s.on('data', (d: Buffer) => {
        n += d.length;
      });
      // Answers only after the client's FIN: needs the proxy to pass the half-close on and keep the other way open.
      s.on('end', () => s.end(`got ${n} bytes\n`));
    }
  });
  await new Promise<void>((r) => server.listen(0, LO, r));
  cleanups.push(() => server.close());
  const port = (server.address() as { port: number }).port;
  return { ep: endpoint(LO, port), server, seen };
}

/** A port where nothing listens (connections are refused). */
async function refusedPort(): Promise<Endpoint> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, LO, r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return endpoint(LO, port);
}

async function tcpProxy(endpoints: Endpoint[], timeouts = [200, 200, 200]): Promise<{ listener: TcpListener; balancer: Balancer }> {
  const balancer = new Balancer(servicePort('t', { endpoints }), clients);
  const listener = await TcpListener.open({
    family: 'IPv4',
    balancer,
    cls: 'all',
    ports: new PortAllocator(null),
    bindAddress: LO,
    connectTimeoutsMs: timeouts,
  });
  cleanups.push(() => listener.destroy());
  return { listener, balancer };
}

/** Connects, optionally writes and half-closes, collects everything until the end. */
function exchange(port: number, send?: string): Promise<{ text: string; error?: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: LO, port, allowHalfOpen: true });
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
    });
    s.on('connect', () => {
      if (send !== undefined) s.end(send);
    });
    s.on('end', () => {
      s.end();
      resolve({ text });
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ text, error: e.code }));
  });
}

describe('TCP listener', () => {
  it('fails over to the next endpoint when one refuses connections', async () => {
    const dead = await refusedPort();
    const good = await backend('good', 'hello');
    const { listener } = await tcpProxy([dead, good.ep]);
    for (let i = 0; i < 20; i++) expect(await exchange(listener.port)).toEqual({ text: 'good\n' });
    // The refused endpoint is tried once, then passed over during its backoff.
    expect(listener.stats.dialFailures).toBe(1);
    expect(listener.stats.rejected).toBe(0);
    expect(good.seen).toHaveLength(20);
  });

  it('resets the client after a few attempts when no endpoint can be reached', async () => {
    const { listener } = await tcpProxy([await refusedPort(), await refusedPort()]);
    const started = Date.now();
    const r = await exchange(listener.port, 'hello?');
    expect(r.error).toBe('ECONNRESET');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(listener.stats.dialFailures).toBe(3);
    expect(listener.stats.rejected).toBe(1);
  });

  it('resets the client at once when the service port has no endpoints', async () => {
    const { listener } = await tcpProxy([]);
    expect((await exchange(listener.port)).error).toBe('ECONNRESET');
  });

  it('keeps a half-closed connection open the other way', async () => {
    const b = await backend('hc', 'halfclose');
    const { listener } = await tcpProxy([b.ep]);
    expect(await exchange(listener.port, 'x'.repeat(100_000))).toEqual({ text: 'got 100000 bytes\n' });
  });

  it('passes a reset from the endpoint on to the client', async () => {
    const b = await backend('rst', 'reset');
    const { listener } = await tcpProxy([b.ep]);
    const r = await new Promise<string | undefined>((resolve) => {
      const s = connect({ host: LO, port: listener.port });
      s.on('connect', () => s.write('boom'));
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code));
      s.on('close', () => resolve('closed without error'));
    });
    expect(r).toBe('ECONNRESET');
  });

  it('passes a reset from the client on to the endpoint', async () => {
    const b = await backend('echo', 'echo');
    const upstreamError = new Promise<string | undefined>((resolve) => {
      b.server.once('connection', (s: Socket) => {
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code));
        s.on('close', () => resolve('closed without error'));
      });
    });
    const { listener } = await tcpProxy([b.ep]);
    const s = connect({ host: LO, port: listener.port });
    s.on('error', () => {});
    await new Promise<void>((r) => s.on('data', () => r()).on('connect', () => s.write('ping')));
    s.resetAndDestroy();
    expect(await upstreamError).toBe('ECONNRESET');
  });

  it('carries 16 MB both ways intact, with backpressure', async () => {
    const b = await backend('echo', 'echo');
    const { listener } = await tcpProxy([b.ep]);
    const data = randomBytes(16 << 20);
    const got = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = connect({ host: LO, port: listener.port, allowHalfOpen: true });
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('end', () => resolve(Buffer.concat(chunks)));
      s.on('error', reject);
      s.on('connect', () => s.end(data));
    });
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(got.length).toBe(data.length);
    expect(sha(got)).toBe(sha(data));
  });

  it('after stop() refuses new connections and keeps established ones; destroy() ends them', async () => {
    const b = await backend('echo', 'echo');
    const { listener } = await tcpProxy([b.ep]);
    const s = connect({ host: LO, port: listener.port });
    s.setEncoding('utf8');
    const read = () => new Promise<string>((r) => s.once('data', (d: string) => r(d)));
    s.write('one');
    expect(await read()).toBe('one');
    listener.stop();
    expect((await exchange(listener.port)).error).toBe('ECONNREFUSED');
    s.write('two');
    expect(await read()).toBe('two');
    expect(listener.active).toBe(1);
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    listener.destroy();
    await closed;
  });
});

async function udpBackend(name: string): Promise<{ ep: Endpoint; socket: UdpSocket }> {
  const socket = createSocket('udp4');
  socket.on('message', (m, r) => socket.send(`${name} ${m.toString()}`, r.port, r.address));
  await new Promise<void>((r) => socket.bind(0, LO, () => r()));
  cleanups.push(() => socket.close());
  return { ep: endpoint(LO, socket.address().port), socket };
}

async function udpProxy(endpoints: Endpoint[], opts: { idleTimeoutMs?: number; maxSessions?: number; now?: () => number } = {}) {
  const balancer = new Balancer(servicePort('u', { protocol: 'UDP', endpoints }), clients);
  const listener = await UdpListener.open({ family: 'IPv4', balancer, cls: 'all', ports: new PortAllocator(null), bindAddress: LO, ...opts });
  cleanups.push(() => listener.destroy());
  return { listener, balancer };
}

/**
 * One client socket sending `n` requests one after the other; resolves with the answers and their source ports.
 * `keepOpen`: the socket stays bound until the test ends, so that no later client gets its port (the kernel may hand
 * a closed socket's port to the next one, which the proxy then takes for the same session).
 */
function udpClient(port: number, n: number, tag: string, keepOpen = false): Promise<{ answers: string[]; fromPorts: number[] }> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    const answers: string[] = [];
    const fromPorts: number[] = [];
    const timer = setTimeout(() => {
      s.close();
      reject(new Error(`client ${tag}: ${answers.length}/${n} answers`));
    }, 5000);
    s.on('message', (m, r) => {
      answers.push(m.toString());
      fromPorts.push(r.port);
      if (answers.length === n) {
        clearTimeout(timer);
        if (keepOpen) cleanups.push(() => s.close());
        else s.close();
        resolve({ answers, fromPorts });
      } else s.send(`${tag}-${answers.length}`, port, LO);
    });
    s.bind(0, LO, () => s.send(`${tag}-0`, port, LO));
  });
}

describe('UDP listener', () => {
  it('answers many clients at once, one session each, replies from the listener’s port', async () => {
    const a = await udpBackend('a');
    const b = await udpBackend('b');
    const { listener } = await udpProxy([a.ep, b.ep]);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => udpClient(listener.port, 3, `c${i}`)));
    const names = new Set<string>();
    results.forEach((r, i) => {
      expect(r.answers.map((x) => x.split(' ')[1])).toEqual([`c${i}-0`, `c${i}-1`, `c${i}-2`]);
      // A session sticks to its endpoint.
      expect(new Set(r.answers.map((x) => x.split(' ')[0])).size).toBe(1);
      names.add(r.answers[0].split(' ')[0]);
      expect(new Set(r.fromPorts)).toEqual(new Set([listener.port]));
    });
    expect(names).toEqual(new Set(['a', 'b']));
    expect(listener.stats.sessionsOpened).toBe(100);
    expect(listener.active).toBe(100);
  });

  it('answers the node’s own traffic from the loopback socket', async () => {
    const a = await udpBackend('a');
    const { listener } = await udpProxy([a.ep]);
    expect(listener.hostPort).not.toBe(listener.port);
    const r = await udpClient(listener.hostPort, 2, 'host');
    expect(r.answers).toEqual(['a host-0', 'a host-1']);
    expect(new Set(r.fromPorts)).toEqual(new Set([listener.hostPort]));
  });

  it('reaps idle sessions', async () => {
    let now = 0;
    const a = await udpBackend('a');
    const { listener } = await udpProxy([a.ep], { idleTimeoutMs: 1000, now: () => now });
    await Promise.all([udpClient(listener.port, 1, 'x'), udpClient(listener.port, 1, 'y')]);
    expect(listener.active).toBe(2);
    now = 999;
    listener.reap();
    expect(listener.active).toBe(2);
    now = 1001;
    listener.reap();
    expect(listener.active).toBe(0);
  });

  it('ends sessions to removed endpoints; their clients move on', async () => {
    const a = await udpBackend('a');
    const b = await udpBackend('b');
    const { listener, balancer } = await udpProxy([a.ep, b.ep]);
    const s = createSocket('udp4');
    cleanups.push(() => s.close());
    const ask = (msg: string) =>
      new Promise<string>((resolve) => {
        s.once('message', (m) => resolve(m.toString()));
        s.send(msg, listener.port, LO);
      });
    await new Promise<void>((r) => s.bind(0, LO, () => r()));
    const first = (await ask('1')).split(' ')[0];
    const other = first === 'a' ? b : a;
    balancer.update(servicePort('u', { protocol: 'UDP', endpoints: [other.ep] }));
    listener.prune();
    expect(listener.active).toBe(0);
    expect((await ask('2')).split(' ')[0]).toBe(first === 'a' ? 'b' : 'a');
  });

  it('drops datagrams when there is no endpoint, and caps the number of sessions', async () => {
    const empty = await udpProxy([]);
    const s = createSocket('udp4');
    cleanups.push(() => s.close());
    await new Promise<void>((r) => s.bind(0, LO, () => r()));
    s.send('x', empty.listener.port, LO);
    await new Promise((r) => setTimeout(r, 100));
    expect(empty.listener.stats.dropped).toBe(1);

    const a = await udpBackend('a');
    const { listener } = await udpProxy([a.ep], { maxSessions: 5 });
    // One after the other: evicting a session whose answer is still on its way loses that answer.
    for (let i = 0; i < 8; i++) await udpClient(listener.port, 1, `m${i}`, true);
    expect(listener.stats.sessionsOpened).toBe(8);
    expect(listener.active).toBe(5);
  });
});

describe('IPv6 listeners (over ::1)', () => {
  const LO6 = '::1';

  it('proxies TCP between IPv6 clients and IPv6 endpoints', async () => {
    const server = createServer((c) => c.end(`v6 ${c.remoteAddress}\n`));
    await new Promise<void>((r) => server.listen({ port: 0, host: LO6, ipv6Only: true }, r));
    cleanups.push(() => server.close());
    const ep = endpoint(LO6, (server.address() as { port: number }).port);
    const balancer = new Balancer(servicePort('t6', { family: 'IPv6', endpoints: [ep] }), clients6);
    const listener = await TcpListener.open({ family: 'IPv6', balancer, cls: 'all', ports: new PortAllocator(null), bindAddress: LO6 });
    cleanups.push(() => listener.destroy());
    const text = await new Promise<string>((resolve, reject) => {
      let got = '';
      const s = connect({ host: LO6, port: listener.port });
      s.setEncoding('utf8').on('data', (d: string) => (got += d));
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    // The endpoint sees the proxy's own IPv6 connection.
    expect(text).toBe('v6 ::1\n');
  });

  it('proxies UDP over IPv6 and answers from the socket the datagram came in on', async () => {
    const backend6 = createSocket({ type: 'udp6', ipv6Only: true });
    backend6.on('message', (m, r) => backend6.send(`b6 ${m.toString()}`, r.port, r.address));
    await new Promise<void>((r) => backend6.bind(0, LO6, () => r()));
    cleanups.push(() => backend6.close());
    const balancer = new Balancer(servicePort('u6', { family: 'IPv6', protocol: 'UDP', endpoints: [endpoint(LO6, backend6.address().port)] }), clients6);
    const listener = await UdpListener.open({ family: 'IPv6', balancer, cls: 'all', ports: new PortAllocator(null), bindAddress: LO6 });
    cleanups.push(() => listener.destroy());
    for (const port of [listener.port, listener.hostPort]) {
      const s = createSocket('udp6');
      cleanups.push(() => s.close());
      const answer = await new Promise<{ text: string; from: string }>((resolve) => {
        s.once('message', (m, r) => resolve({ text: m.toString(), from: `[${r.address}]:${r.port}` }));
        s.bind(0, LO6, () => s.send('ping', port, LO6));
      });
      expect(answer).toEqual({ text: 'b6 ping', from: `[::1]:${port}` });
    }
  });

  it('lets the IPv4 and the IPv6 proxier hold the same listener port number at once', async () => {
    const range = { min: 0, max: 0 };
    const free = createServer();
    await new Promise<void>((r) => free.listen(0, LO, r));
    range.min = range.max = (free.address() as { port: number }).port;
    await new Promise<void>((r) => free.close(() => r()));
    const ep = endpoint(LO, 9);
    const open = (family: 'IPv4' | 'IPv6', host: string) =>
      TcpListener.open({
        family,
        balancer: new Balancer(servicePort('same', { family, endpoints: [ep] }), family === 'IPv4' ? clients : clients6),
        cls: 'all',
        ports: new PortAllocator(range),
        bindAddress: host,
      });
    const v4 = await open('IPv4', LO);
    cleanups.push(() => v4.destroy());
    const v6 = await open('IPv6', LO6);
    cleanups.push(() => v6.destroy());
    expect([v4.port, v6.port]).toEqual([range.min, range.min]);
  });
});
