// The `state` command, run as a user runs it, against every scenario (the repository's own and, when
// ../shared/scenarios exists, the shared ones) and against bad input.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { listScenarioFiles, loadScenario, OWN_SCENARIOS_DIR } from '../../src/lab/sandbox/scenario.ts';
import { clusterCIDRs } from '../../src/lab/sandbox/topology.ts';

const REPO = resolve(import.meta.dirname, '../..');
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

/** A scenario's objects, by file name in the repository's own scenarios. */
const ownObjects = (file: string) => loadScenario(join(OWN_SCENARIOS_DIR, file)).objects;

type Expected = Record<string, Record<string, [string[], string[]]>>;

// What a correct kube-proxy routes on node-a for each scenario: [clusterEndpoints, localEndpoints] per service
// port ("namespace/name:port", " IPv6" added for the IPv6 one), written from the scenarios' intent.
const OWN: Expected = {
  'cluster-ip-general': {
    'general/multi:dns-tcp': [['198.19.1.101:5353', '198.19.2.101:5353'], ['198.19.1.101:5353']],
    'general/multi:dns-udp': [['198.19.1.101:53', '198.19.2.101:53'], ['198.19.1.101:53']],
    'general/multi:http': [['198.19.1.101:8080', '198.19.2.101:8080'], ['198.19.1.101:8080']],
    'general/multi:https': [['198.19.1.101:8443', '198.19.2.101:8443'], ['198.19.1.101:8443']],
    'general/solo:http': [['198.19.1.102:8080'], ['198.19.1.102:8080']],
  },
  'dual-stack-services': {
    'dual/dns6:dns IPv6': [['[2001:2:0:11::191]:5353', '[2001:2:0:12::191]:5353'], ['[2001:2:0:11::191]:5353']],
    'dual/edge6:http IPv6': [['[2001:2:0:11::191]:8080', '[2001:2:0:12::191]:8080'], ['[2001:2:0:11::191]:8080']],
    'dual/empty6:http IPv6': [[], []],
    'dual/legacy:http': [['198.19.2.192:8080'], []],
    'dual/self6:http IPv6': [['[2001:2:0:11::191]:8080'], ['[2001:2:0:11::191]:8080']],
    'dual/sticky6:dns IPv6': [['[2001:2:0:11::191]:5353', '[2001:2:0:12::191]:5353'], ['[2001:2:0:11::191]:5353']],
    'dual/sticky6:http IPv6': [['[2001:2:0:11::191]:8080', '[2001:2:0:12::191]:8080'], ['[2001:2:0:11::191]:8080']],
    'dual/web:http': [['198.19.1.191:8080', '198.19.2.191:8080'], ['198.19.1.191:8080']],
    'dual/web:http IPv6': [['[2001:2:0:11::191]:8080', '[2001:2:0:12::191]:8080'], ['[2001:2:0:11::191]:8080']],
  },
  'external-traffic-policy': {
    'etp/cluster:http': [['198.19.1.131:8080', '198.19.2.131:8080'], ['198.19.1.131:8080']],
    'etp/local-elsewhere:http': [['198.19.2.132:8080'], []],
    'etp/local:http': [['198.19.1.131:8080', '198.19.2.131:8080'], ['198.19.1.131:8080']],
  },
  'internal-external-masquerade': {
    'masq/etp-local:http': [['198.19.1.142:8080', '198.19.2.142:8080'], ['198.19.1.142:8080']],
    'masq/itp-local:http': [['198.19.1.143:8080', '198.19.2.143:8080'], ['198.19.1.143:8080']],
    'masq/plain:http': [['198.19.1.141:8080', '198.19.2.141:8080'], ['198.19.1.141:8080']],
  },
  'internal-traffic-policy': {
    'itp/cluster:http': [['198.19.1.151:8080', '198.19.2.151:8080', '198.19.2.152:8080'], ['198.19.1.151:8080']],
    'itp/local-deleted:http': [[], []],
    'itp/local-many:http': [
      ['198.19.1.151:8080', '198.19.1.152:8080', '198.19.2.151:8080'],
      ['198.19.1.151:8080', '198.19.1.152:8080'],
    ],
    'itp/local-none-here:http': [['198.19.2.151:8080', '198.19.2.152:8080'], []],
    'itp/local-one:http': [['198.19.1.151:8080', '198.19.2.151:8080', '198.19.2.152:8080'], ['198.19.1.151:8080']],
  },
  'load-balancer': {
    'lb/ext:http': [['198.19.1.122:8080', '198.19.2.122:8080'], ['198.19.1.122:8080']],
    'lb/lb-nodes-only:http': [['198.19.2.121:8080'], []],
    'lb/lb-open:http': [['198.19.2.121:8080'], []],
  },
  'no-endpoints-reject': {
    'empty/gone:dns': [[], []],
    'empty/gone:http': [[], []],
    'empty/unready:http': [[], []],
  },
  'node-ports': {
    'nodeports/np:dns': [['198.19.1.171:5353', '198.19.2.171:5353'], ['198.19.1.171:5353']],
    'nodeports/np:dns IPv6': [['[2001:2:0:11::171]:5353', '[2001:2:0:12::171]:5353'], ['[2001:2:0:11::171]:5353']],
    'nodeports/np:http': [['198.19.1.171:8080', '198.19.2.171:8080'], ['198.19.1.171:8080']],
    'nodeports/np:http IPv6': [['[2001:2:0:11::171]:8080', '[2001:2:0:12::171]:8080'], ['[2001:2:0:11::171]:8080']],
  },
  'session-affinity-client-ip': {
    'affinity/spread:http': [['198.19.1.181:8080', '198.19.2.181:8080'], ['198.19.1.181:8080']],
    'affinity/sticky:dns': [['198.19.1.181:5353', '198.19.2.181:5353'], ['198.19.1.181:5353']],
    'affinity/sticky:http': [['198.19.1.181:8080', '198.19.2.181:8080'], ['198.19.1.181:8080']],
  },
  'terminating-endpoints': {
    'term/cluster-only-terminating:http': [
      ['198.19.1.162:8080', '198.19.1.163:8080', '198.19.2.165:8080'],
      ['198.19.1.162:8080', '198.19.1.163:8080'],
    ],
    'term/cluster-ready:http': [
      ['198.19.1.161:8080', '198.19.1.162:8080', '198.19.2.165:8080'],
      ['198.19.1.161:8080', '198.19.1.162:8080'],
    ],
    'term/cluster-terminating-remote:http': [['198.19.2.165:8080'], []],
    'term/cluster-unusable:http': [[], []],
    'term/deleted:http': [[], []],
    'term/local-only-terminating:http': [['198.19.2.165:8080'], ['198.19.1.162:8080', '198.19.1.163:8080']],
    'term/local-ready:http': [
      ['198.19.1.161:8080', '198.19.1.162:8080', '198.19.2.165:8080'],
      ['198.19.1.161:8080', '198.19.1.162:8080'],
    ],
    'term/local-terminating-remote:http': [['198.19.2.165:8080'], []],
    'term/local-unusable:http': [[], []],
  },
  'topology-hints': {
    'hints/draining:http': [['198.19.1.201:8080', '198.19.2.201:8080'], ['198.19.1.201:8080']],
    'hints/partly-hinted:http': [['198.19.1.201:8080', '198.19.2.202:8080'], ['198.19.1.201:8080']],
    'hints/this-node:http': [['198.19.1.202:8080'], ['198.19.1.201:8080', '198.19.1.202:8080']],
    'hints/west-only:http': [['198.19.1.202:8080', '198.19.2.201:8080'], ['198.19.1.202:8080']],
    'hints/zonal:http': [['198.19.1.201:8080', '198.19.2.202:8080'], ['198.19.1.201:8080']],
  },
};

/** The same for the shared scenarios (used when ../shared/scenarios exists). */
const SHARED: Expected = {
  'clusterip-basic': {
    'shop/web:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
  },
  'dual-stack': {
    'ds/dns6:dns IPv6': [['[2001:2:0:12::61]:5353'], []],
    'ds/empty6:http IPv6': [[], []],
    'ds/web:http': [['198.19.1.61:8080', '198.19.2.61:8080'], ['198.19.1.61:8080']],
    'ds/web:http IPv6': [['[2001:2:0:11::61]:8080', '[2001:2:0:12::61]:8080'], ['[2001:2:0:11::61]:8080']],
  },
  'external-and-lb-ips': {
    'edge/api:https': [['198.19.1.11:8443', '198.19.2.11:8443'], ['198.19.1.11:8443']],
  },
  'external-traffic-policy-local': {
    'edge/ingress:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
  },
  hairpin: {
    'shop/self:http': [['198.19.1.11:8080'], ['198.19.1.11:8080']],
  },
  'multiport-named': {
    'shop/app:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
    'shop/app:metrics': [['198.19.1.11:9100', '198.19.2.11:9100'], ['198.19.1.11:9100']],
  },
  'no-endpoints': {
    'shop/empty:http': [[], []],
  },
  nodeport: {
    'shop/web:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
  },
  'session-affinity': {
    'shop/spread:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
    'shop/sticky:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
  },
  'terminating-and-internal-policy': {
    'shop/draining:http': [['198.19.2.11:8080'], []],
    'shop/node-local:http': [['198.19.1.11:8080', '198.19.2.11:8080'], ['198.19.1.11:8080']],
    'shop/remote-only:http': [['198.19.2.11:8080'], []],
    'shop/rolling:http': [['198.19.1.11:8080'], ['198.19.1.11:8080']],
  },
  'topology-aware': {
    'topo/other-zone-only:http': [['198.19.2.81:8080', '198.19.2.82:8080'], []],
    'topo/partial-hints:http': [['198.19.1.81:8080', '198.19.2.81:8080'], ['198.19.1.81:8080']],
    'topo/same-node:http': [['198.19.1.82:8080'], ['198.19.1.82:8080']],
    'topo/zonal:http': [['198.19.1.81:8080', '198.19.2.82:8080'], ['198.19.1.81:8080']],
  },
  udp: {
    'kube-system/dns:dns': [['198.19.1.11:5353', '198.19.2.11:5353'], ['198.19.1.11:5353']],
  },
};

const EXPECTED: Expected = { ...OWN, ...SHARED };

describe('state gives the right endpoints for every scenario', () => {
  const files = listScenarioFiles();
  it('knows every scenario', () => {
    const names = files.map((f) => loadScenario(f).name);
    expect(names.filter((n) => !(n in EXPECTED))).toEqual([]);
    expect(Object.keys(OWN).filter((n) => !names.includes(n))).toEqual([]);
  });
  for (const f of files) {
    const scenario = loadScenario(f);
    it(`${scenario.name} (${basename(f)})`, () => {
      const file = objectsFile(scenario.name, scenario.objects);
      const r = runState(['--from', file, '--hostname-override', 'node-a', '--cluster-cidr', clusterCIDRs(scenario.pods).join(','), '-o', 'json']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const rows = JSON.parse(r.stdout) as { service: string; portName: string; family: string; clusterEndpoints: string[]; localEndpoints: string[] }[];
      const key = (x: (typeof rows)[number]) => `${x.service}:${x.portName}${x.family === 'IPv6' ? ' IPv6' : ''}`;
      const got = Object.fromEntries(rows.map((x) => [key(x), [x.clusterEndpoints, x.localEndpoints]]));
      expect(got).toEqual(EXPECTED[scenario.name]);
    });
  }

  it('prints a table for people', () => {
    const r = runState(['--from', objectsFile('table', ownObjects('session-affinity-client-ip.yaml')), '--hostname-override', 'node-a']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^SERVICE\s+PORT\s+CLUSTER-IP\s+NODEPORT\s+EXTERNAL\s+POLICY \(EXT\/INT\)\s+AFFINITY\s+ENDPOINTS\s+LOCAL$/);
    expect(lines[1]).toMatch(
      /^affinity\/spread:http\s+80\/TCP\s+198\.18\.100\.223\s+<none>\s+<none>\s+Cluster\/Cluster\s+None\s+198\.19\.1\.181:8080,198\.19\.2\.181:8080\s+198\.19\.1\.181:8080$/,
    );
    expect(lines[3]).toMatch(/^affinity\/sticky:http\s+80\/TCP\s+198\.18\.100\.221\s+31221\s+.*ClientIP 300s/);
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
    const bad = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'broken', namespace: 'general' },
      spec: { clusterIP: '198.18.100.99', ports: [{ name: 'http', port: 123456 }] },
    };
    const r = runState(['--from', objectsFile('invalid', [...ownObjects('cluster-ip-general.yaml'), bad]), '--hostname-override', 'node-a', '-o', 'json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Service general/broken: spec.ports[0].port: 123456 is not a port number (1-65535)');
    const rows = JSON.parse(r.stdout) as { service: string }[];
    expect([...new Set(rows.map((x) => x.service))]).toEqual(['general/multi', 'general/solo']);
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
