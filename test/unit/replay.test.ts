// The replay plan (src/lab/replay.ts): which pods the sandbox gets, which service ports are left out and
// why, and what each probe is held to, from the model's explanation of the same objects.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_ENDPOINT_PODS, planReplay } from '../../src/lab/replay.ts';
import type { KubeObject } from '../../src/model/k8s.ts';
import { readObjectsFile } from '../../src/watch/file.ts';

const DUMP = path.join(import.meta.dirname, '..', 'e2e', 'fixtures', 'replay-cluster.json');

function service(name: string, clusterIP: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'big' },
    spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  } as KubeObject;
}

function slice(name: string, ip: string, nodeName: string): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-x`, namespace: 'big', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName }],
  } as KubeObject;
}

const node = (name: string, ip: string) =>
  ({ apiVersion: 'v1', kind: 'Node', metadata: { name }, status: { addresses: [{ type: 'InternalIP', address: ip }] } }) as KubeObject;

describe('planReplay', () => {
  it('this node is the one with the most endpoints; each probe is held to what explain says', async () => {
    const plan = planReplay(await readObjectsFile(DUMP), {});
    expect(plan.hostname).toBe('node-x');
    expect(plan.leftOut).toEqual([]);
    const podOf = (ip: string) => plan.endpointPods.find((e) => e.address === ip)!.pod;
    expect(podOf('198.18.120.21').node).toBe('node-a');
    expect(podOf('198.18.120.22').node).toBe('node-b');
    const probe = (servicePort: string, from: string, ip: string) =>
      plan.probes.find((p) => p.servicePort === servicePort && p.from === from && p.to.ip === ip)?.expect;
    expect(probe('shop/api:https', 'client', '198.18.210.20')).toEqual({ oneOf: [podOf('198.18.120.21').name], sourceIP: '198.18.0.100' });
    expect(probe('shop/batch:http', 'client', '198.18.210.30')).toEqual({ dropped: true });
    expect(probe('shop/orders:http', 'pod:prober', '198.18.110.40')).toEqual({ refused: true });
    // A ClusterIP is not probed from outside; the NodePort is, at this Node's own address.
    expect(probe('shop/web:http', 'client', '198.18.110.10')).toBeUndefined();
    expect(probe('shop/web:http', 'client', '198.18.0.11')).toMatchObject({ sourceNot: '198.18.0.100' });
    expect(plan.nodeAddresses).toEqual(['198.18.0.11', '2001:2::11']);
  });

  it(`samples a large dump by whole service ports: at most ${MAX_ENDPOINT_PODS} endpoint pods, the rest reported`, () => {
    const objects: KubeObject[] = [node('n1', '198.18.0.11')];
    for (let i = 0; i < MAX_ENDPOINT_PODS + 6; i++) objects.push(service(`s${i}`, `198.18.111.${i + 1}`), slice(`s${i}`, `198.18.121.${i + 1}`, 'n1'));
    const plan = planReplay(objects, {});
    expect(plan.endpointPods).toHaveLength(MAX_ENDPOINT_PODS);
    expect(plan.leftOut).toHaveLength(6);
    expect(plan.leftOut[0]).toMatch(/sampled out/);
  });

  it('leaves out hostNetwork endpoints (a node address) and addresses the sandbox holds itself', () => {
    const objects: KubeObject[] = [
      node('n1', '198.18.0.11'),
      service('apiserver', '198.18.111.1'),
      slice('apiserver', '198.18.0.11', 'n1'),
      service('clash', '198.18.111.2'),
      slice('clash', '198.18.0.100', 'n1'),
      service('fine', '198.18.111.3'),
      slice('fine', '198.18.121.3', 'n1'),
    ];
    const plan = planReplay(objects, { hostname: 'n1' });
    expect(plan.leftOut).toEqual([
      "big/apiserver:http (IPv4): its endpoint 198.18.0.11 is a node's address (hostNetwork), which the sandbox does not rehearse",
      'big/clash:http (IPv4): its endpoint 198.18.0.100 is an address of the sandbox itself',
    ]);
    expect(plan.endpointPods.map((e) => e.address)).toEqual(['198.18.121.3']);
  });
});
