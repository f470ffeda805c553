// `kube-proxy-ts replay`: a cluster dump of our own (test/e2e/fixtures/replay-cluster.json: a dual-stack
// NodePort, an externalTrafficPolicy Local LB with endpoints on both nodes, another with none on this node,
// a UDP service, a service without endpoints, ClientIP affinity) rehearsed in the sandbox; every probe must answer as the model
// says, and every namespace must be gone afterwards, also when probes fail.
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/exec.ts';
import { BIN } from '../../src/lab/sandbox/proxy.ts';
import { listNamespaces } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const DUMP = path.join(import.meta.dirname, 'fixtures', 'replay-cluster.json');

function replay(...args: string[]) {
  return run([process.execPath, '--disable-warning=ExperimentalWarning', BIN, 'replay', ...args], { timeoutMs: 180_000 });
}

async function namespacesOf(stdout: string): Promise<string[]> {
  const prefix = /Network built \(prefix (kpt\w+)\)/.exec(stdout)?.[1];
  expect(prefix).toBeTruthy();
  return (await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`));
}

/** The table row of one probe: service port, from, to, model verdict, then what answered and ok/MISMATCH. */
function row(stdout: string, servicePort: string, from: string, to: string): string {
  const line = stdout.split('\n').find((l) => l.split(/\s+/).slice(0, 3).join(' ') === `${servicePort} ${from} ${to}`);
  expect(line, `no row for ${servicePort} from ${from} to ${to}`).toBeTruthy();
  return line!;
}

describe('kube-proxy-ts replay', () => {
  for (const mode of ['iptables', 'nftables']) {
    it(`${mode}: every probe of the dump answers as the model says, namespaces removed`, async () => {
      const r = await replay('--from', DUMP, '--mode', mode);
      expect(r.stdout).toContain(`mode ${mode}, this node node-x`);
      expect(r.stdout).toContain('Every probe answered as the model says. The network namespaces are gone.');
      expect(r.code).toBe(0);
      // The dump's own addresses answer: an ETP Local LB from outside goes to this node's endpoint, source kept.
      expect(row(r.stdout, 'shop/api:https', 'outside', '198.18.210.20:443/tcp')).toMatch(
        /DNAT, source kept\s+198\.18\.120\.21 \(src 198\.18\.0\.100\)×\d+\s+ok$/,
      );
      expect(row(r.stdout, 'shop/batch:http', 'outside', '198.18.210.30:80/tcp')).toMatch(/DROP\s+timeout×1\s+ok$/);
      expect(row(r.stdout, 'shop/orders:http', 'pod', '198.18.110.40:80/tcp')).toMatch(/REJECT\s+refused×1\s+ok$/);
      expect(row(r.stdout, 'shop/dns:dns', 'pod', '198.18.110.53:53/udp')).toMatch(/198\.18\.120\.31 .*ok$/);
      expect(row(r.stdout, 'shop/web:http', 'outside', '[2001:2::11]:30080/tcp')).toMatch(/DNAT, masqueraded .*ok$/);
      expect(await namespacesOf(r.stdout)).toEqual([]);
    });
  }

  it('userspace: the same answers, the source addresses left unchecked as the mode cannot keep them', async () => {
    const r = await replay('--from', DUMP, '--mode', 'userspace');
    expect(r.stdout).toContain('the source addresses they see are not checked');
    expect(r.stdout).toContain('Every probe answered as the model says.');
    expect(r.code).toBe(0);
    expect(row(r.stdout, 'shop/batch:http', 'outside', '198.18.210.30:80/tcp')).toMatch(/DROP\s+timeout×1\s+ok$/);
    expect(await namespacesOf(r.stdout)).toEqual([]);
  });

  it('--hostname-override: the other node, whose endpoints the Local LBs now keep for outside clients', async () => {
    const r = await replay('--from', DUMP, '--hostname-override', 'node-y');
    expect(r.stdout).toContain('this node node-y');
    expect(r.code).toBe(0);
    expect(row(r.stdout, 'shop/batch:http', 'outside', '198.18.210.30:80/tcp')).toMatch(
      /DNAT, source kept\s+198\.18\.120\.41 \(src 198\.18\.0\.100\)×\d+\s+ok$/,
    );
    expect(row(r.stdout, 'shop/api:https', 'outside', '198.18.210.20:443/tcp')).toMatch(/198\.18\.120\.22 \(src 198\.18\.0\.100\)×\d+\s+ok$/);
    expect(await namespacesOf(r.stdout)).toEqual([]);
  });

  it('--ip-family IPv6: only the IPv6 frontends are probed', async () => {
    const r = await replay('--from', DUMP, '--ip-family', 'IPv6');
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/198\.18\.1\d0\./);
    expect(row(r.stdout, 'shop/web:http', 'pod', '[2001:2:0:110::10]:80/tcp')).toMatch(/DNAT, source kept .*ok$/);
    expect(await namespacesOf(r.stdout)).toEqual([]);
  });

  it('an interrupt mid-probes removes every namespace', async () => {
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'replay', '--from', DUMP], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stderr.resume();
    const built = new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes('Network built')) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : null))));
    await built;
    child.kill('SIGINT');
    expect(await exited).not.toBe(0);
    expect(await namespacesOf(stdout)).toEqual([]);
  });

  it('a dump it cannot read: exit 1 with one line, before any namespace exists', async () => {
    const bad = path.join(tmpdir(), `kpt-replay-bad-${process.pid}.json`);
    writeFileSync(bad, '{ not json');
    try {
      const r = await replay('--from', bad);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^kube-proxy-ts: .*kpt-replay-bad/);
      expect(r.stdout).not.toContain('Network built');
    } finally {
      rmSync(bad, { force: true });
    }
  });
});
