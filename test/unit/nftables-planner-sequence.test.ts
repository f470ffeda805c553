// A sequence of changes through one planner: every batch it sends is compared with the batches the planner
// sent before its record was made compact (the snapshot), and after the sequence the record must describe
// the same table as a fresh planner's full() of the final state.
import { describe, expect, it } from 'vitest';
import { type Plan, Planner } from '../../src/modes/nftables/planner.ts';
import { setSchemas } from '../../src/modes/nftables/layout.ts';
import type { DesiredState, ServicePort } from '../../src/model/types.ts';
import { config, desiredState, endpoint, servicePort, withEndpoints } from './nftables-fixtures.ts';

const node = (addresses: string[]) => ({ name: 'node-a', labels: {}, zone: '', addresses, podCIDRs: [], deleting: false });

function at(ports: ServicePort[], addresses: string[]): DesiredState {
  return { ...desiredState(ports, { clusterCIDRs: ['198.19.0.0/16'], nodePortAddresses: ['198.18.0.0/24'] }), node: node(addresses) };
}

const plain = servicePort({
  name: 'plain',
  clusterIPs: ['198.18.100.1'],
  endpoints: [endpoint('198.19.1.1', 8080, { node: 'node-a' }), endpoint('198.19.1.2', 8080, { node: 'node-b' })],
});
const local = servicePort({
  name: 'local',
  clusterIPs: ['198.18.100.2'],
  nodePort: 30080,
  externalIPs: ['198.18.200.1'],
  externalTrafficPolicy: 'Local',
  endpoints: [
    endpoint('198.19.2.1', 8080, { node: 'node-a' }),
    endpoint('198.19.2.2', 9090, { node: 'node-b' }),
    endpoint('198.19.2.3', 8080, { node: 'node-a' }),
  ],
});
const sticky = servicePort({
  name: 'sticky',
  clusterIPs: ['198.18.100.3'],
  loadBalancerIPs: ['198.18.201.1'],
  loadBalancerSourceRanges: ['198.18.0.0/24', '203.0.113.0/24'],
  affinityTimeoutSeconds: 30,
  endpoints: [
    endpoint('198.19.3.1', 8080, { node: 'node-b' }),
    endpoint('198.19.3.2', 8080, { node: 'node-a' }),
    endpoint('198.19.3.3', 8080, { node: 'node-b' }),
  ],
});
const empty = servicePort({
  name: 'empty',
  clusterIPs: ['198.18.100.4'],
  nodePort: 30081,
  loadBalancerIPs: ['198.18.201.2'],
  loadBalancerSourceRanges: ['198.18.0.0/24'],
});
/** Claims local's externalIP: its key sorts first, so it takes the frontend over while it exists. */
const thief = servicePort({
  name: 'a-thief',
  clusterIPs: ['198.18.100.5'],
  externalIPs: ['198.18.200.1'],
  endpoints: [endpoint('198.19.5.1', 8080, { node: 'node-a' })],
});
const invalid = servicePort({ name: 'plain', clusterIPs: ['198.18.100.1'], externalIPs: ['not-an-ip'], endpoints: plain.allEndpoints });

/** Each step: the service ports after it, the node's addresses, and the keys a change set would name. */
const steps: { name: string; ports: ServicePort[]; addresses: string[]; keys: string[] }[] = [
  { name: 'full', ports: [plain, local, sticky, empty], addresses: ['198.18.0.1'], keys: [] },
  { name: 'nothing changed', ports: [plain, local, sticky, empty], addresses: ['198.18.0.1'], keys: [plain.key, sticky.key] },
  {
    name: 'endpoint replaced, endpoint added',
    ports: [
      withEndpoints(plain, [plain.allEndpoints[0]!, endpoint('198.19.1.9', 8080, { node: 'node-b' })]),
      local,
      withEndpoints(sticky, [...sticky.allEndpoints, endpoint('198.19.3.4', 8080, { node: 'node-a' })]),
      empty,
    ],
    addresses: ['198.18.0.1'],
    keys: [plain.key, sticky.key],
  },
  {
    name: 'affinity slot freed and a new endpoint',
    ports: [plain, local, withEndpoints(sticky, [sticky.allEndpoints[1]!, endpoint('198.19.3.5', 8080, { node: 'node-b' })]), empty],
    addresses: ['198.18.0.1'],
    keys: [plain.key, sticky.key],
  },
  { name: 'frontend taken over', ports: [plain, local, sticky, empty, thief], addresses: ['198.18.0.1'], keys: [thief.key] },
  { name: 'node IP change', ports: [plain, local, sticky, empty, thief], addresses: ['10.0.0.1'], keys: [] },
  { name: 'frontend handed back, port removed', ports: [plain, local, sticky, empty], addresses: ['10.0.0.1'], keys: [thief.key] },
  {
    name: 'endpoints gone and come',
    ports: [plain, withEndpoints(local, []), sticky, withEndpoints(empty, [endpoint('198.19.4.1', 8080, { node: 'node-a' })])],
    addresses: ['10.0.0.1'],
    keys: [local.key, empty.key],
  },
  {
    name: 'one endpoint port for all',
    ports: [plain, withEndpoints(local, [endpoint('198.19.2.1', 8080, { node: 'node-a' })]), sticky, empty],
    addresses: ['10.0.0.1'],
    keys: [local.key, empty.key],
  },
  { name: 'affinity off', ports: [plain, local, { ...sticky, affinityTimeoutSeconds: null }, empty], addresses: ['10.0.0.1'], keys: [local.key, sticky.key] },
  {
    name: 'port turns invalid',
    ports: [invalid, local, { ...sticky, affinityTimeoutSeconds: null }, empty],
    addresses: ['198.18.0.1', '10.0.0.1'],
    keys: [plain.key],
  },
  { name: 'valid again, others removed', ports: [plain, sticky], addresses: ['198.18.0.1'], keys: [plain.key, local.key, empty.key, sticky.key] },
];

/** A plan as text, one nft command a line. */
const show = (p: Plan) =>
  [
    `written ${p.written}, +${p.elementsAdded} -${p.elementsDeleted} elements, ${p.chainsWritten} chains`,
    ...p.issues.map((i) => `issue ${i.key}: ${i.message}`),
    p.json ?? 'no batch',
  ].join('\n');

/** Every element of the record, per set. */
const table = (p: Planner) => Object.fromEntries(setSchemas().map((s) => [s.name, p.elements(s.name).sort()]));

describe('planner: a sequence of changes', () => {
  it('sends the same batches as before, and its record matches a fresh full() of the final state', () => {
    let now = 0;
    const p = new Planner({ family: 'IPv4', config: config({ nodePortAddresses: ['198.18.0.0/24'] }), now: () => now });
    for (const step of steps) {
      now += 10_000;
      const state = at(step.ports, step.addresses);
      const plan = step.name === 'full' ? p.full(state) : p.update(state, step.keys);
      expect(show(plan)).toMatchSnapshot(step.name);
    }
    const last = steps.at(-1)!;
    const fresh = new Planner({ family: 'IPv4', config: config({ nodePortAddresses: ['198.18.0.0/24'] }), now: () => now });
    fresh.full(at(last.ports, last.addresses));
    expect(table(p)).toEqual(table(fresh));
    expect([...p.portKeys()].sort()).toEqual([...fresh.portKeys()].sort());
  });
});
