// The daemon's HTTP servers are bounded (src/daemon/http.ts): a flood of idle connections is closed instead
// of using up the process's file descriptors, and real requests are still answered. Loopback only.
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionBudget, boundedServer, listen } from '../../src/daemon/http.ts';

const servers: { close(): void }[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

function openIdle(port: number, n: number): Promise<Socket[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Socket>((resolve) => {
          const s = connect(port, '127.0.0.1', () => resolve(s));
          s.on('error', () => resolve(s));
        }),
    ),
  );
}

const closed = (s: Socket) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));

describe('bounded HTTP servers', () => {
  it('close connections over the shared budget at once, and idle ones after the idle timeout; requests still get answers', async () => {
    const budget = new ConnectionBudget({ maxConnections: 20, maxPerSource: 20, headersTimeoutMs: 300, requestTimeoutMs: 500, idleTimeoutMs: 300 });
    const a = boundedServer('a', (_req, res) => res.end('ok'), budget);
    const b = boundedServer('b', (_req, res) => res.end('ok'), budget);
    servers.push(a, b);
    await listen(a, '127.0.0.1', 0, 'a');
    await listen(b, '127.0.0.1', 0, 'b');
    const portA = (a.address() as AddressInfo).port;
    const portB = (b.address() as AddressInfo).port;

    const flood = [...(await openIdle(portA, 30)), ...(await openIdle(portB, 30))];
    await new Promise((r) => setTimeout(r, 50));
    expect(budget.open).toBeLessThanOrEqual(20);
    expect(budget.refused).toBeGreaterThanOrEqual(40);

    // The idle connections that were admitted are closed by the server, freeing the budget.
    await Promise.all(flood.map(closed));
    for (let i = 0; i < 50 && budget.open > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(budget.open).toBe(0);
    expect(await get(portA)).toBe(200);
    expect(await get(portB)).toBe(200);
  });

  it('one source cannot take the whole budget: another address is still served', async () => {
    const budget = new ConnectionBudget({ maxConnections: 50, maxPerSource: 5, headersTimeoutMs: 1_000, requestTimeoutMs: 1_000, idleTimeoutMs: 2_000 });
    const s = boundedServer('per-source', (_req, res) => res.end('ok'), budget);
    servers.push(s);
    await listen(s, '127.0.0.1', 0, 'per-source');
    const port = (s.address() as AddressInfo).port;
    const flood = await openIdle(port, 30);
    await new Promise((r) => setTimeout(r, 50));
    expect(budget.open).toBe(5);
    expect(budget.refused).toBe(25);
    for (const f of flood) f.destroy();
  });

  it('a client that starts a request and never finishes its headers is cut off', async () => {
    const budget = new ConnectionBudget({ maxConnections: 10, maxPerSource: 10, headersTimeoutMs: 200, requestTimeoutMs: 400, idleTimeoutMs: 1_000 });
    const s = boundedServer('slow', (_req, res) => res.end('ok'), budget);
    servers.push(s);
    await listen(s, '127.0.0.1', 0, 'slow');
    const [sock] = await openIdle((s.address() as AddressInfo).port, 1);
    // Keep the connection busy with a trickle of header bytes, never the end of the headers.
    const timer = setInterval(() => sock!.write('X-A: b\r\n'), 100);
    sock!.write('GET / HTTP/1.1\r\nHost: x\r\n');
    const started = Date.now();
    await closed(sock!);
    clearInterval(timer);
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});
