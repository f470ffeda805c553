// model/k8s.ts readFields: the API source keeps only what parse.ts reads; nothing it decides may change.
import { describe, expect, it } from 'vitest';
import { type EndpointSlice, type KubeObject, readFields, type Service } from '../../src/model/k8s.ts';
import { parseEndpointSlice, parseService } from '../../src/model/parse.ts';

const service = (): Service =>
  ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'web',
      namespace: 'shop',
      uid: 'u-1',
      resourceVersion: '7',
      labels: { app: 'web', 'service.kubernetes.io/headless': '' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
      managedFields: [{ manager: 'kubectl' }],
    },
    spec: {
      type: 'LoadBalancer',
      clusterIP: '198.18.100.10',
      clusterIPs: ['198.18.100.10'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30080 }],
      selector: { app: 'web' },
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 31000,
    },
    status: { loadBalancer: { ingress: [{ ip: '198.18.200.1', ipMode: 'VIP', ports: [] }] } },
  }) as unknown as Service;

const slice = (): EndpointSlice =>
  ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: 'web-x7k2p',
      namespace: 'shop',
      resourceVersion: '9',
      labels: { 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'x' },
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-01-01T00:00:00Z', other: 'y' },
      ownerReferences: [{ kind: 'Service', name: 'web' }],
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP', appProtocol: 'http' }],
    endpoints: [
      {
        addresses: ['198.19.1.11'],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: 'node-a',
        zone: 'z1',
        hints: { forZones: [{ name: 'z1' }] },
        targetRef: { kind: 'Pod', name: 'web-1', uid: 'p-1' },
      },
    ],
  }) as unknown as EndpointSlice;

describe('readFields', () => {
  it('keeps exactly what parse.ts reads, and parses to the same result', () => {
    const s = readFields(service()) as Service & { metadata: Record<string, unknown> };
    expect(s.metadata).toEqual({ name: 'web', namespace: 'shop', resourceVersion: '7', labels: { 'service.kubernetes.io/headless': '' }, annotations: {} });
    expect(s.spec?.ports).toEqual([{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30080 }]);
    expect(s.status?.loadBalancer?.ingress).toEqual([{ ip: '198.18.200.1', ipMode: 'VIP' }]);
    expect(parseService(s)).toEqual(parseService(service()));
    const unlabelled = service();
    delete unlabelled.metadata!.labels!['service.kubernetes.io/headless'];
    expect(parseService(readFields(unlabelled) as Service)).toEqual(parseService(unlabelled));

    const e = readFields(slice()) as EndpointSlice;
    expect(e.metadata).toEqual({
      name: 'web-x7k2p',
      namespace: 'shop',
      resourceVersion: '9',
      labels: { 'kubernetes.io/service-name': 'web' },
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-01-01T00:00:00Z' },
    });
    expect(e.endpoints![0]).toEqual({
      addresses: ['198.19.1.11'],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: 'node-a',
      zone: 'z1',
      hints: { forZones: [{ name: 'z1' }] },
    });
    expect(parseEndpointSlice(e, 'node-a')).toEqual(parseEndpointSlice(slice(), 'node-a'));
  });

  it('keeps values of the wrong shape as they are, so that they are still reported', () => {
    const bad = service();
    (bad.spec as Record<string, unknown>).ports = 'http';
    (bad.metadata as Record<string, unknown>).labels = 'x';
    const r = parseService(readFields(bad) as Service);
    expect(r).toEqual(parseService(bad));
    expect(r.ok).toBe(false);
    const badSlice = slice();
    (badSlice as Record<string, unknown>).endpoints = [null, 'x', { addresses: ['not-an-ip'] }];
    expect(parseEndpointSlice(readFields(badSlice) as EndpointSlice, 'node-a')).toEqual(parseEndpointSlice(badSlice, 'node-a'));
  });

  it('leaves the argument alone, a Node whole but for its managedFields, and other kinds as they are', () => {
    const original = slice();
    readFields(original);
    expect(original).toEqual(slice());
    const node = { kind: 'Node', metadata: { name: 'node-a', labels: { a: 'b' }, managedFields: [{}] }, status: { addresses: [] } } as unknown as KubeObject;
    expect(readFields(node)).toEqual({ kind: 'Node', metadata: { name: 'node-a', labels: { a: 'b' } }, status: { addresses: [] } });
    const other = { kind: 'Pod', metadata: { name: 'p' } } as unknown as KubeObject;
    expect(readFields(other)).toBe(other);
  });
});
