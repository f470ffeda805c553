// Realistic dumps for bench/from.ts: what `kubectl get -A -o json services,endpointslices` prints for a
// cluster of N services with E endpoints each (metadata with uid, resourceVersion, creationTimestamp, labels,
// annotations, managedFields left out as kubectl does by default; Service spec as the API server defaults it;
// EndpointSlice endpoints with targetRef, conditions, nodeName and zone), written as JSON (a v1 List), as the
// same List in YAML and as a stream of YAML documents. Addresses from bench/synthetic.ts.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { dump } from 'js-yaml';
import { clusterIP, podIP } from './synthetic.ts';

const NODES = ['node-a', 'node-b', 'node-c', 'node-d'];
const ZONES = ['zone-1', 'zone-2'];
const CREATED = '2026-11-02T09:14:27Z';

function uid(kind: number, i: number): string {
  const h = (kind * 0x9e3779b1 + i * 0x85ebca6b) >>> 0;
  const hex = h.toString(16).padStart(8, '0');
  return `${hex}-${hex.slice(0, 4)}-4${hex.slice(1, 4)}-8${hex.slice(4, 7)}-${(i + 1e11).toString(16).slice(-12)}`;
}

/** A Service as the API server serves it; every tenth a NodePort. `generation` changes its selector label. */
export function dumpService(i: number, generation = 0): Record<string, unknown> {
  const name = `svc-${i}`;
  const nodePort = i % 10 === 0;
  const labels = { app: name, 'app.kubernetes.io/part-of': 'bench', tier: i % 3 === 0 ? 'frontend' : 'backend', generation: String(generation) };
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      annotations: {
        'kubectl.kubernetes.io/last-applied-configuration': `${JSON.stringify({
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { annotations: {}, labels, name, namespace: 'bench' },
          spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }], selector: { app: name }, type: nodePort ? 'NodePort' : 'ClusterIP' },
        })}\n`,
      },
      creationTimestamp: CREATED,
      labels,
      name,
      namespace: 'bench',
      resourceVersion: String(100000 + i * 3 + generation),
      uid: uid(1, i),
    },
    spec: {
      clusterIP: clusterIP(i),
      clusterIPs: [clusterIP(i)],
      externalTrafficPolicy: nodePort ? 'Cluster' : undefined,
      internalTrafficPolicy: 'Cluster',
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      ports: [{ name: 'http', nodePort: nodePort ? 30000 + i / 10 : undefined, port: 80, protocol: 'TCP', targetPort: 8080 }],
      selector: { app: name },
      sessionAffinity: 'None',
      type: nodePort ? 'NodePort' : 'ClusterIP',
    },
    status: { loadBalancer: {} },
  };
}

/** The EndpointSlice of service i; `generation` moves its endpoints' port (a change the rules must follow). */
export function dumpSlice(i: number, endpoints: number, generation = 0): Record<string, unknown> {
  const name = `svc-${i}`;
  return {
    addressType: 'IPv4',
    apiVersion: 'discovery.k8s.io/v1',
    endpoints: Array.from({ length: endpoints }, (_, j) => ({
      addresses: [podIP(i, j)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: NODES[j % NODES.length],
      targetRef: { kind: 'Pod', name: `${name}-7d9f8b6c4-${(i * 31 + j).toString(36).padStart(5, 'x')}`, namespace: 'bench', uid: uid(3, i * 16 + j) },
      zone: ZONES[j % ZONES.length],
    })),
    kind: 'EndpointSlice',
    metadata: {
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': CREATED },
      creationTimestamp: CREATED,
      generateName: `${name}-`,
      generation: 1 + generation,
      labels: {
        app: name,
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
        'kubernetes.io/service-name': name,
      },
      name: `${name}-x7k2p`,
      namespace: 'bench',
      ownerReferences: [{ apiVersion: 'v1', blockOwnerDeletion: true, controller: true, kind: 'Service', name, uid: uid(1, i) }],
      resourceVersion: String(100001 + i * 3 + generation),
      uid: uid(2, i),
    },
    ports: [{ name: 'http', port: 8080 + (generation % 2), protocol: 'TCP' }],
  };
}

export function dumpObjects(services: number, endpoints: number): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < services; i++) out.push(dumpService(i));
  for (let i = 0; i < services; i++) out.push(dumpSlice(i, endpoints));
  return out;
}

export type DumpFormat = 'json' | 'yaml-list' | 'yaml-docs';
export const DUMP_FORMATS: readonly DumpFormat[] = ['json', 'yaml-list', 'yaml-docs'];

/** The text of a dump in one format, as kubectl writes it (JSON indented by 4, YAML block style). */
export function dumpText(objects: readonly Record<string, unknown>[], format: DumpFormat): string {
  // JSON.stringify drops the undefined fields; YAML is written from the same JSON-clean objects.
  const clean = JSON.parse(JSON.stringify(objects)) as Record<string, unknown>[];
  switch (format) {
    case 'json':
      return `${JSON.stringify({ apiVersion: 'v1', items: clean, kind: 'List', metadata: { resourceVersion: '' } }, null, 4)}\n`;
    case 'yaml-list':
      return dump({ apiVersion: 'v1', items: clean, kind: 'List', metadata: { resourceVersion: '' } });
    case 'yaml-docs':
      return clean.map((o) => `---\n${dump(o)}`).join('');
  }
}

export const DUMP_FILE: Record<DumpFormat, string> = { json: 'dump.json', 'yaml-list': 'dump-list.yaml', 'yaml-docs': 'dump-docs.yaml' };

/** Writes the three dumps of one cluster into dir; returns their paths and sizes. */
export function writeDumps(dir: string, services: number, endpoints: number): Record<DumpFormat, { file: string; bytes: number }> {
  mkdirSync(dir, { recursive: true });
  const objects = dumpObjects(services, endpoints);
  const out = {} as Record<DumpFormat, { file: string; bytes: number }>;
  for (const f of DUMP_FORMATS) {
    const file = path.join(dir, DUMP_FILE[f]);
    const text = dumpText(objects, f);
    writeFileSync(file, text);
    out[f] = { file, bytes: Buffer.byteLength(text) };
  }
  return out;
}
