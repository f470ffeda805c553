// The `state` command, run as a user runs it, against every shared scenario and against bad input.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';

const REPO = resolve(import.meta.dirname, '../..');
const SCENARIOS = resolve(REPO, '..', 'shared', 'scenarios');
const BIN = join(REPO, 'bin', 'kube-proxy-ts.js');
const dir = mkdtempSync(join(tmpdir(), 'kpt-state-'));

function runState(args: string[]) {
  const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'state', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function objectsFile(name: string, objects: unknown[]): string {
  const f = join(dir, `${name}.yaml`);
  writeFileSync(f, stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
  return f;
}

// What a correct kube-proxy routes on node-a for each scenario: [clusterEndpoints, localEndpoints] per service port.
const EXPECTED: Record<string, Record<string, [string[], string[]]>> = {
  'clusterip-basic': { 'shop/web:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']] },
  'external-and-lb-ips': { 'edge/api:https': [['198.19.1.11:8443', '198.19.2.11:8443'], ['198.19.1.11:8443']] },
  'external-traffic-policy-local': { 'edge/ingress:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']] },
  hairpin: { 'shop/self:http': [['198.19.1.11:8080'], ['198.19.1.11:8080']] },
  'multiport-named': {
    'shop/app:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
    'shop/app:metrics': [['198.19.1.11:9100', '198.19.2.11:9100'], ['198.19.1.11:9100']],
  },
  'no-endpoints': { 'shop/empty:http': [[], []] },
  nodeport: { 'shop/web:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']] },
  'session-affinity': {
    'shop/sticky:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
    'shop/spread:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
  },
  'terminating-and-internal-policy': {
    'shop/rolling:http': [['198.19.1.11:8080'], ['198.19.1.11:8080']],
    'shop/draining:http': [['198.19.2.11:8080'], []],
    'shop/node-local:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
    'shop/remote-only:http': [['198.19.2.11:8080'], []],
  },
  udp: { 'kube-system/dns:dns': [['198.19.1.11:5353', '198.19.2.11:5353'], ['198.19.1.11:5353']] },
};

describe('state gives the right endpoints for every shared scenario', () => {
  const files = readdirSync(SCENARIOS).filter((f) => f.endsWith('.yaml'));
  it('knows every shared scenario', () => {
    expect(files.map((f) => f.replace(/\.yaml$/, '')).sort()).toEqual(Object.keys(EXPECTED).sort());
  });
  for (const f of files) {
    const scenario = parse(readFileSync(join(SCENARIOS, f), 'utf8')) as { name: string; objects: unknown[] };
    it(scenario.name, () => {
      const file = objectsFile(scenario.name, scenario.objects);
      const r = runState(['--from', file, '--hostname-override', 'node-a', '--cluster-cidr', '198.19.0.0/16', '-o', 'json']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const rows = JSON.parse(r.stdout) as { service: string; portName: string; clusterEndpoints: string[]; localEndpoints: string[] }[];
      const got = Object.fromEntries(rows.map((x) => [`${x.service}:${x.portName}`, [x.clusterEndpoints, x.localEndpoints]]));
      expect(got).toEqual(EXPECTED[scenario.name]);
    });
  }

  it('prints a table for people', () => {
    const scenario = parse(readFileSync(join(SCENARIOS, 'session-affinity.yaml'), 'utf8')) as { objects: unknown[] };
    const r = runState(['--from', objectsFile('table', scenario.objects), '--hostname-override', 'node-a']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^SERVICE\s+PORT\s+CLUSTER-IP\s+NODEPORT\s+EXTERNAL\s+POLICY \(EXT\/INT\)\s+AFFINITY\s+ENDPOINTS\s+LOCAL$/);
    expect(lines[1]).toMatch(
      /^shop\/spread:http\s+80\/TCP\s+198\.18\.100\.51\s+<none>\s+<none>\s+Cluster\/Cluster\s+None\s+198\.19\.1\.11:8080,198\.19\.2\.11:8080\s+198\.19\.1\.11:8080$/,
    );
    expect(lines[2]).toMatch(/^shop\/sticky:http\s+80\/TCP\s+198\.18\.100\.50\s+30050\s+.*ClientIP 600s/);
  });
});

describe('state with bad input', () => {
  it('malformed YAML: non-zero exit, the file and the position', () => {
    const f = join(dir, 'broken.yaml');
    writeFileSync(f, 'apiVersion: v1\nkind: List\nitems:\n  - kind: Service\n    metadata: {name: web\n  - oops: [\n');
    const r = runState(['--from', f]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `));
    expect(r.stdout).toBe('');
  });

  it('a missing file is named', () => {
    const r = runState(['--from', join(dir, 'nope.yaml')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('nope.yaml: no such file');
  });

  it('an invalid Service among valid ones is reported by name and left out; the rest is present', () => {
    const scenario = parse(readFileSync(join(SCENARIOS, 'clusterip-basic.yaml'), 'utf8')) as { objects: unknown[] };
    const bad = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'broken', namespace: 'shop' },
      spec: { clusterIP: '198.18.100.99', ports: [{ name: 'http', port: 123456 }] },
    };
    const r = runState(['--from', objectsFile('invalid', [...scenario.objects, bad]), '--hostname-override', 'node-a', '-o', 'json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Service shop/broken: spec.ports[0].port: 123456 is not a port number (1-65535)');
    const rows = JSON.parse(r.stdout) as { service: string }[];
    expect(rows.map((x) => x.service)).toEqual(['shop/web']);
  });

  it('a multi-document stream and JSON input work too; other kinds are skipped', () => {
    const f = join(dir, 'multi.yaml');
    writeFileSync(
      f,
      [
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}',
        'apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n}\nspec: {clusterIP: 198.18.100.1, ports: [{port: 80}]}',
      ].join('\n---\n'),
    );
    const r = runState(['--from', f, '-o', 'json']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { service: string }[]).map((x) => x.service)).toEqual(['n/a']);
    const j = join(dir, 'list.json');
    writeFileSync(
      j,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'ServiceList',
        items: [{ metadata: { name: 'b', namespace: 'n' }, spec: { clusterIP: '198.18.100.2', ports: [{ port: 81 }] } }],
      }),
    );
    const r2 = runState(['--from', j, '-o', 'json']);
    expect(r2.code).toBe(0);
    expect(JSON.parse(r2.stdout)[0]).toMatchObject({ service: 'n/b', port: 81, nodePort: null, affinityTimeoutSeconds: null, clusterEndpoints: [] });
  });

  it('unknown flags and bad values are usage errors', () => {
    expect(runState(['--from', 'x', '--bogus']).code).toBe(2);
    expect(runState(['--from', 'x', '-o', 'xml']).stderr).toContain('is not table or json');
  });
});
