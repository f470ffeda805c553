// The Services and EndpointSlices of a protobuf list answer, decoded into exactly what model/k8s.ts readFields
// keeps of the same objects served as JSON, so everything after the source is the same for both encodings (a test
// decodes upstream's own encoded test objects and compares). Field numbers are those of k8s.io/api's
// generated.proto. Where Go's JSON leaves a field out (omitempty) but its protobuf writes it anyway (a plain string
// field is always written, empty or not), the empty value is left out here too.
import { HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, sharedConditions, TRIGGER_TIME_ANNOTATION } from '../model/k8s.ts';
import { expectLength, expectVarint, LENGTH, MAGIC, ProtobufError, Reader, startsWithMagic, VARINT } from './protobuf-wire.ts';

// Each decoder reads the fields of the message the reader is narrowed to: while (r.more), a tag, then the value
// read or skipped. Fields the proxy does not read are skipped by their length.

/** A string field Go's JSON leaves out when empty (`omitempty` on a plain string): set only when not empty. */
function setNonEmpty(o: Record<string, unknown>, key: string, s: string): void {
  if (s !== '') o[key] = s;
}

/** Appends to the list at o[key]. */
function push(o: Record<string, unknown>, key: string, v: unknown): void {
  const list = o[key] as unknown[] | undefined;
  if (list) list.push(v);
  else o[key] = [v];
}

/** A nested message read by `read` (the reader narrowed to it). */
function nested<T>(r: Reader, read: (r: Reader) => T): T {
  const outer = r.enter();
  const v = read(r);
  r.leave(outer);
  return v;
}

/** metav1.Time (seconds, nanos) as Go's JSON writes it: RFC 3339 in UTC, whole seconds. */
function time(r: Reader): string {
  let seconds = 0;
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + VARINT) seconds = r.varint();
    else r.skip(tag & 7);
  }
  return new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
}

const keyBytes = (keys: readonly string[]) => keys.map((k) => [k, Buffer.from(k)] as const);
const READ_LABELS = keyBytes([SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL]);
const READ_ANNOTATIONS = keyBytes([TRIGGER_TIME_ANNOTATION]);

/**
 * One map<string,string> entry (the reader narrowed to it) into `into`: every key, or only one of `wanted`
 * (compared as bytes: the others, a last-applied configuration among them, are never decoded).
 */
function mapEntry(r: Reader, into: Record<string, string>, wanted: readonly (readonly [string, Buffer])[] | null): void {
  // An entry without its key field has the empty key (protobuf's default), when every key is read.
  let key: string | null = wanted === null ? '' : null;
  let value = '';
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) key = wanted === null ? r.string() : wantedKey(r, wanted);
    else if (tag === (2 << 3) + LENGTH && key !== null) value = r.string();
    else r.skip(tag & 7);
  }
  if (key !== null) into[key] = value;
}

/** The key here if it is one of `wanted`, else null; the reader moves past it either way. */
function wantedKey(r: Reader, wanted: readonly (readonly [string, Buffer])[]): string | null {
  const at = r.pos;
  for (const [k, bytes] of wanted) {
    r.pos = at;
    if (r.equals(bytes)) return k;
  }
  return null;
}

/** A map field's entry (the reader at its length) into o[key], created on the first entry. */
function mapField(r: Reader, o: Record<string, unknown>, key: string, wanted: readonly (readonly [string, Buffer])[] | null): void {
  const into = (o[key] ??= {}) as Record<string, string>;
  const outer = r.enter();
  mapEntry(r, into, wanted);
  r.leave(outer);
}

/** ObjectMeta: name, namespace, resourceVersion, deletionTimestamp, and the labels and annotations the proxy reads. */
function objectMeta(r: Reader): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    const n = tag >>> 3;
    const wire = tag & 7;
    if (n === 1 || n === 3 || n === 6) {
      expectLength(wire);
      setNonEmpty(m, n === 1 ? 'name' : n === 3 ? 'namespace' : 'resourceVersion', n === 3 ? r.shared() : r.string());
    } else if (n === 9) {
      expectLength(wire);
      m.deletionTimestamp = nested(r, time);
    } else if (n === 11 || n === 12) {
      expectLength(wire);
      // Present (if empty) once the object has any: readFields keeps `{}` for labels it does not read.
      mapField(r, m, n === 11 ? 'labels' : 'annotations', n === 11 ? READ_LABELS : READ_ANNOTATIONS);
    } else r.skip(wire);
  }
  return m;
}

function servicePort(r: Reader): Record<string, unknown> {
  const p: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    const n = tag >>> 3;
    const wire = tag & 7;
    if (n === 1 || n === 2) {
      expectLength(wire);
      setNonEmpty(p, n === 1 ? 'name' : 'protocol', r.shared());
    } else if (n === 3) {
      expectVarint(wire);
      p.port = r.int32();
    } else if (n === 5) {
      expectVarint(wire);
      const v = r.int32();
      if (v !== 0) p.nodePort = v;
    } else r.skip(wire);
  }
  // `port` has no omitempty: Go writes it, and its JSON, even when 0.
  p.port ??= 0;
  return p;
}

/** ServiceSpec's sessionAffinityConfig: {clientIP: {timeoutSeconds}} (pointers: present when written). */
function sessionAffinityConfig(r: Reader): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) out.clientIP = nested(r, clientIPConfig);
    else r.skip(tag & 7);
  }
  return out;
}

function clientIPConfig(r: Reader): Record<string, unknown> {
  const c: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + VARINT) c.timeoutSeconds = r.int32();
    else r.skip(tag & 7);
  }
  return c;
}

const SPEC_STRINGS: Record<number, string> = {
  3: 'clusterIP',
  4: 'type',
  7: 'sessionAffinity',
  11: 'externalTrafficPolicy',
};
const SPEC_LISTS: Record<number, string> = { 5: 'externalIPs', 9: 'loadBalancerSourceRanges', 18: 'clusterIPs' };

function serviceSpec(r: Reader): Record<string, unknown> {
  const s: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    const n = tag >>> 3;
    const wire = tag & 7;
    if (n === 1) {
      expectLength(wire);
      push(s, 'ports', nested(r, servicePort));
    } else if (SPEC_STRINGS[n] !== undefined) {
      expectLength(wire);
      setNonEmpty(s, SPEC_STRINGS[n], n === 3 ? r.string() : r.shared());
    } else if (SPEC_LISTS[n] !== undefined) {
      expectLength(wire);
      push(s, SPEC_LISTS[n], r.string());
    } else if (n === 12) {
      expectVarint(wire);
      const v = r.int32();
      if (v !== 0) s.healthCheckNodePort = v;
    } else if (n === 14) {
      expectLength(wire);
      s.sessionAffinityConfig = nested(r, sessionAffinityConfig);
    } else if (n === 22) {
      // A pointer in Go: present when written, even empty.
      expectLength(wire);
      s.internalTrafficPolicy = r.shared();
    } else r.skip(wire);
  }
  return s;
}

function loadBalancerIngress(r: Reader): Record<string, unknown> {
  const ingress: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) setNonEmpty(ingress, 'ip', r.string());
    else if (tag === (3 << 3) + LENGTH) ingress.ipMode = r.shared();
    else r.skip(tag & 7);
  }
  return ingress;
}

function loadBalancerStatus(r: Reader): Record<string, unknown> {
  const lb: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) push(lb, 'ingress', nested(r, loadBalancerIngress));
    else r.skip(tag & 7);
  }
  return lb;
}

/** ServiceStatus: loadBalancer.ingress[].ip and ipMode. */
function serviceStatus(r: Reader): Record<string, unknown> {
  const status: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) status.loadBalancer = nested(r, loadBalancerStatus);
    else r.skip(tag & 7);
  }
  return status;
}

function service(r: Reader): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    const n = tag >>> 3;
    expectLength(tag & 7);
    if (n === 1) o.metadata = nested(r, objectMeta);
    else if (n === 2) o.spec = nested(r, serviceSpec);
    else if (n === 3) o.status = nested(r, serviceStatus);
    else r.skip(LENGTH);
  }
  return o;
}

/** Each of the 27 combinations of three *bool (absent, false, true), as readFields shares it; made when first seen. */
const CONDITIONS: unknown[] = [];

/** EndpointConditions (three *bool): the shared object readFields uses for the same combination. */
function conditions(r: Reader): unknown {
  // Per flag: 0 absent, 1 false, 2 true.
  let ready = 0;
  let serving = 0;
  let terminating = 0;
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + VARINT) ready = r.varint() !== 0 ? 2 : 1;
    else if (tag === (2 << 3) + VARINT) serving = r.varint() !== 0 ? 2 : 1;
    else if (tag === (3 << 3) + VARINT) terminating = r.varint() !== 0 ? 2 : 1;
    else r.skip(tag & 7);
  }
  const code = ready * 9 + serving * 3 + terminating;
  let shared = CONDITIONS[code];
  if (shared === undefined) {
    const c: Record<string, boolean> = {};
    if (ready !== 0) c.ready = ready === 2;
    if (serving !== 0) c.serving = serving === 2;
    if (terminating !== 0) c.terminating = terminating === 2;
    CONDITIONS[code] = shared = sharedConditions(c);
  }
  return shared;
}

/** ForZone and ForNode: {name}. */
function named(r: Reader): { name: string } {
  let name = '';
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) name = r.shared();
    else r.skip(tag & 7);
  }
  return { name };
}

/** EndpointHints: forZones and forNodes, each a list of {name}. */
function hints(r: Reader): Record<string, unknown> {
  const h: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) push(h, 'forZones', nested(r, named));
    else if (tag === (2 << 3) + LENGTH) push(h, 'forNodes', nested(r, named));
    else r.skip(tag & 7);
  }
  return h;
}

function endpoint(r: Reader): Record<string, unknown> {
  const e: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    const n = tag >>> 3;
    expectLength(tag & 7);
    if (n === 1) push(e, 'addresses', r.string());
    else if (n === 2) e.conditions = nested(r, conditions);
    // Pointers in Go: present when written.
    else if (n === 6) e.nodeName = r.shared();
    else if (n === 7) e.zone = r.shared();
    else if (n === 8) e.hints = nested(r, hints);
    else if (n === 5) mapField(r, e, 'deprecatedTopology', null);
    else r.skip(LENGTH);
  }
  // `addresses` has no omitempty (a nil list is null in JSON); `conditions` is a struct, always written.
  e.addresses ??= null;
  e.conditions ??= sharedConditions({});
  return e;
}

function endpointPort(r: Reader): Record<string, unknown> {
  const p: Record<string, unknown> = {};
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + LENGTH) p.name = r.shared();
    else if (tag === (2 << 3) + LENGTH) p.protocol = r.shared();
    else if (tag === (3 << 3) + VARINT) p.port = r.int32();
    else r.skip(tag & 7);
  }
  return p;
}

function endpointSlice(r: Reader): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  let addressType = '';
  const endpoints: unknown[] = [];
  const ports: unknown[] = [];
  while (r.more) {
    const tag = r.varint();
    const n = tag >>> 3;
    expectLength(tag & 7);
    if (n === 1) o.metadata = nested(r, objectMeta);
    else if (n === 2) endpoints.push(nested(r, endpoint));
    else if (n === 3) ports.push(nested(r, endpointPort));
    else if (n === 4) addressType = r.shared();
    else r.skip(LENGTH);
  }
  // Neither list has omitempty: an empty one is null in Go's JSON, as an API server serves it.
  o.addressType = addressType;
  o.ports = ports.length > 0 ? ports : null;
  o.endpoints = endpoints.length > 0 ? endpoints : null;
  return o;
}

/** The kinds whose lists are read in protobuf, and their items' decoders. */
export const ITEM_DECODERS = { Service: service, EndpointSlice: endpointSlice } as const;
export type ProtobufKind = keyof typeof ITEM_DECODERS;
export const isProtobufKind = (kind: string): kind is ProtobufKind => kind in ITEM_DECODERS;

/** Decodes one list item of `kind` from its bytes (tests; the scanner below decodes in place). */
export function decodeItem(kind: ProtobufKind, bytes: Buffer): Record<string, unknown> {
  return ITEM_DECODERS[kind](new Reader(bytes, 0, bytes.length));
}

/** Decodes a whole encoded object ("k8s\0" + runtime.Unknown whose raw is the object): tests, with upstream's files. */
export function decodeObject(kind: ProtobufKind, bytes: Buffer): Record<string, unknown> {
  if (!startsWithMagic(bytes)) throw new ProtobufError('no "k8s\\0" prefix');
  const r = new Reader(bytes, MAGIC.length, bytes.length);
  let object: Record<string, unknown> | null = null;
  while (r.more) {
    const tag = r.varint();
    if (tag === (2 << 3) + LENGTH) object = nested(r, ITEM_DECODERS[kind]);
    else r.skip(tag & 7);
  }
  if (object === null) throw new ProtobufError('no object in the envelope');
  return object;
}
