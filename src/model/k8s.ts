// The subset of Kubernetes objects the proxy reads, as the API server serves them.
// Every field is optional here: input is untrusted until src/model/parse.ts has checked it.

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}

export interface ServicePortSpec {
  name?: string;
  protocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
}

export interface Service {
  apiVersion?: string;
  kind?: 'Service';
  metadata?: ObjectMeta;
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: string[];
    ports?: ServicePortSpec[];
    externalIPs?: string[];
    loadBalancerSourceRanges?: string[];
    sessionAffinity?: string;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    externalTrafficPolicy?: string;
    internalTrafficPolicy?: string;
    healthCheckNodePort?: number;
    externalName?: string;
    trafficDistribution?: string;
  };
  status?: {
    loadBalancer?: { ingress?: { ip?: string; hostname?: string; ipMode?: string }[] };
  };
}

export interface EndpointSlice {
  apiVersion?: string;
  kind?: 'EndpointSlice';
  metadata?: ObjectMeta;
  addressType?: string;
  ports?: { name?: string; protocol?: string; port?: number | null; appProtocol?: string }[] | null;
  endpoints?:
    | {
        addresses?: string[];
        conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
        nodeName?: string;
        zone?: string;
        hostname?: string;
        hints?: { forZones?: { name?: string }[]; forNodes?: { name?: string }[] };
        deprecatedTopology?: Record<string, string>;
        /** discovery.k8s.io/v1beta1 only: kubernetes.io/hostname and topology.kubernetes.io/zone live here. */
        topology?: Record<string, string>;
      }[]
    | null;
}

export interface Node {
  apiVersion?: string;
  kind?: 'Node';
  metadata?: ObjectMeta;
  spec?: { podCIDR?: string; podCIDRs?: string[] };
  status?: { addresses?: { type?: string; address?: string }[] };
}

export type KubeObject = Service | EndpointSlice | Node;

/** The kinds the proxy watches. */
export type WatchedKind = 'Service' | 'EndpointSlice' | 'Node';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const HOSTNAME_LABEL = 'kubernetes.io/hostname';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

// ---- One copy of what the proxy reads ----
// An API server sends whole objects (managedFields, last-applied annotations, owner references, every
// endpoint's targetRef...): at 10,000 services x 10 endpoints that is most of the memory of the objects. The
// sources keep only the fields above that src/model/parse.ts reads, before anything caches the objects. A
// value of the wrong shape is kept as it is, so that parse.ts still reports it.

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The listed keys of `v` when it is an object (absent ones left out); anything else as it is. */
function pick(v: unknown, keys: readonly string[], inner: Record<string, (x: unknown) => unknown> = {}): unknown {
  if (!isRecord(v)) return v;
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    if (v[k] === undefined) continue;
    const f = inner[k];
    out[k] = f ? f(v[k]) : v[k];
  }
  return out;
}

/** Each element of a list through `f`; a non-list as it is. */
const each = (f: (x: unknown) => unknown) => (v: unknown) => (Array.isArray(v) ? v.map(f) : v);

/** Labels and annotations: only the keys read (the proxy's selection, the slice's service, the trigger time). */
const READ_LABELS = [SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL];
const READ_ANNOTATIONS = [TRIGGER_TIME_ANNOTATION];
// resourceVersion: the reflectors compare versions and resume watches from it.
const meta = (v: unknown) =>
  pick(v, ['name', 'namespace', 'resourceVersion', 'deletionTimestamp', 'labels', 'annotations'], {
    labels: (l) => pick(l, READ_LABELS),
    annotations: (a) => pick(a, READ_ANNOTATIONS),
  });

const serviceFields = (v: unknown) =>
  pick(v, ['apiVersion', 'kind', 'metadata', 'spec', 'status'], {
    metadata: meta,
    spec: (s) =>
      pick(
        s,
        [
          'type',
          'clusterIP',
          'clusterIPs',
          'ports',
          'externalIPs',
          'loadBalancerSourceRanges',
          'sessionAffinity',
          'sessionAffinityConfig',
          'externalTrafficPolicy',
          'internalTrafficPolicy',
          'healthCheckNodePort',
        ],
        { ports: each((p) => pick(p, ['name', 'protocol', 'port', 'nodePort'])) },
      ),
    status: (s) => pick(s, ['loadBalancer'], { loadBalancer: (lb) => pick(lb, ['ingress'], { ingress: each((i) => pick(i, ['ip', 'ipMode'])) }) }),
  });

/**
 * An endpoint's conditions: one shared, frozen object per combination of booleans (there are few), instead of
 * one object per endpoint; anything else picked as it is.
 */
const CONDITIONS = new Map<string, unknown>();
const isFlag = (x: unknown) => x === undefined || x === null || typeof x === 'boolean';
export function sharedConditions(c: unknown): unknown {
  const picked = pick(c, ['ready', 'serving', 'terminating']);
  if (!isRecord(picked) || !isFlag(picked.ready) || !isFlag(picked.serving) || !isFlag(picked.terminating)) return picked;
  const key = `${picked.ready}|${picked.serving}|${picked.terminating}`;
  let shared = CONDITIONS.get(key);
  if (shared === undefined) CONDITIONS.set(key, (shared = Object.freeze(picked)));
  return shared;
}

const sliceFields = (v: unknown) =>
  pick(v, ['apiVersion', 'kind', 'metadata', 'addressType', 'ports', 'endpoints'], {
    metadata: meta,
    ports: each((p) => pick(p, ['name', 'protocol', 'port'])),
    endpoints: each((e) =>
      pick(e, ['addresses', 'conditions', 'nodeName', 'zone', 'hints', 'deprecatedTopology', 'topology'], {
        conditions: sharedConditions,
        hints: (h) => pick(h, ['forZones', 'forNodes']),
      }),
    ),
  });

/**
 * The fields of an object the proxy reads (a new object; the argument is left as it is). A list answer in protobuf
 * is decoded straight into these same fields (src/watch/protobuf.ts): a field added here must be read there too
 * (test/unit/protobuf.test.ts compares the two on upstream's test objects and the scenarios' objects). Services and
 * EndpointSlices are cut down to them; a Node (there is one) loses only its managedFields; other kinds pass.
 */
export function readFields(o: KubeObject): KubeObject {
  switch (o.kind) {
    case 'Service':
      return serviceFields(o) as Service;
    case 'EndpointSlice':
      return sliceFields(o) as EndpointSlice;
    case 'Node': {
      if (!isRecord(o.metadata) || !('managedFields' in o.metadata)) return o;
      const { managedFields: _, ...metadata } = o.metadata as ObjectMeta & { managedFields?: unknown };
      return { ...o, metadata };
    }
    default:
      return o;
  }
}
