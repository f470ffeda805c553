// What the proxy keeps of an object read from a file: the fields of src/model/k8s.ts that the model reads
// (not uid or resourceVersion), copied as they are (validation is the model's: a field of the wrong type
// stays wrong here), and of a Service's or EndpointSlice's labels and annotations only the keys the model
// looks at. A 10,000 x 10 dump as kubectl prints it carries last-applied-configuration annotations,
// targetRefs, ownerReferences and managedFields that would otherwise stay in memory as long as the objects.
import {
  HEADLESS_LABEL,
  type KubeObject,
  SERVICE_NAME_LABEL,
  SERVICE_PROXY_NAME_LABEL,
  TRIGGER_TIME_ANNOTATION,
} from '../model/k8s.ts';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The listed fields of v (those present); v itself when it is not an object, so that the model reports it. */
function pick(v: unknown, fields: readonly string[], inner?: Record<string, (x: unknown) => unknown>): unknown {
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const f of fields) {
    if (!Object.hasOwn(v, f)) continue;
    const fn = inner?.[f];
    out[f] = fn ? fn(v[f]) : v[f];
  }
  return out;
}

const mapList = (fn: (x: unknown) => unknown) => (v: unknown) => (Array.isArray(v) ? v.map(fn) : v);

const SERVICE_LABELS = [SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL];
const SERVICE_ANNOTATIONS = [TRIGGER_TIME_ANNOTATION];

function metadata(kind: unknown): (v: unknown) => unknown {
  // A kindless item (of a typed List, whose kind is known only at the List's end) keeps all its labels.
  const allLabels = kind === undefined;
  return (v) =>
    pick(v, ['name', 'namespace', 'labels', 'annotations', 'deletionTimestamp'], {
      labels: allLabels ? (l) => l : (l) => pick(l, SERVICE_LABELS),
      annotations: (a) => pick(a, SERVICE_ANNOTATIONS),
    });
}

const serviceSpec = (v: unknown) =>
  pick(v, [
    'type',
    'clusterIP',
    'clusterIPs',
    'ipFamilies',
    'ports',
    'externalIPs',
    'loadBalancerSourceRanges',
    'sessionAffinity',
    'sessionAffinityConfig',
    'externalTrafficPolicy',
    'internalTrafficPolicy',
    'healthCheckNodePort',
    'externalName',
    'trafficDistribution',
    // a kindless item's, in case it is a Node's
    'podCIDR',
    'podCIDRs',
    'taints',
  ]);

const endpoint = (v: unknown) =>
  pick(v, ['addresses', 'conditions', 'nodeName', 'zone', 'hostname', 'hints', 'deprecatedTopology', 'topology']);

const status = (v: unknown) => pick(v, ['loadBalancer', 'addresses']);

/**
 * The fields of a Service or EndpointSlice that the model reads. Any other object is returned as it is:
 * Lists; Nodes, which are few and also read by the daemon (addresses, taints). Services, slices and Nodes
 * share no top-level field names that mean different things, so kindless items of a typed List are reduced
 * the same way.
 */
export function modelFields(o: unknown): unknown {
  if (!isObj(o)) return o;
  const kind = o.kind;
  if (!(kind === 'Service' || kind === 'EndpointSlice' || kind === undefined)) return o;
  if (kind === undefined && (Object.hasOwn(o, 'items') || Object.hasOwn(o, 'objects'))) return o;
  return pick(o, ['apiVersion', 'kind', 'metadata', 'spec', 'status', 'addressType', 'ports', 'endpoints'], {
    metadata: metadata(kind),
    spec: serviceSpec,
    status,
    endpoints: mapList(endpoint),
  }) as KubeObject;
}
