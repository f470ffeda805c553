// nodePortAddresses `primary` (upstream's default in the nftables mode): NodePorts on this node's primary IPs,
// from its Node object, in what --dry-run prints.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunOptions, resolveRunOptions } from '../../src/config.ts';
import { dryRun } from '../../src/daemon/run.ts';

const dir = mkdtempSync(join(tmpdir(), 'kpt-primary-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const objects = (withNode: boolean) => ({
  apiVersion: 'v1',
  kind: 'List',
  items: [
    ...(withNode
      ? [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: '198.18.0.1' }] } }]
      : []),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { type: 'NodePort', clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80, nodePort: 30080 }] },
    },
  ],
});

async function rules(withNode: boolean, extra: string[]): Promise<string> {
  const file = join(dir, `objects-${withNode}.json`);
  writeFileSync(file, JSON.stringify(objects(withNode)));
  const opts = (await resolveRunOptions(['--mode', 'iptables', '--dry-run', '--from', file, '--hostname-override', 'node-a', ...extra])) as RunOptions;
  let text = '';
  const out = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  });
  await dryRun(opts, out);
  return text;
}

describe('nodePortAddresses primary', () => {
  it("limits NodePorts to the Node's primary IP", async () => {
    expect(await rules(true, ['--nodeport-addresses', 'primary'])).toMatch(/-d 198\.18\.0\.1\/32 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS/);
  });
  it('falls back to every local address without a Node, as upstream', async () => {
    const text = await rules(false, ['--nodeport-addresses', 'primary']);
    expect(text).toContain('-j KUBE-NODEPORTS');
    expect(text).not.toMatch(/-d 198\.18\.0\.1\/32 -m addrtype/);
  });
});
