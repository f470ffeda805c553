// The test API server's protobuf encoding (application/vnd.kubernetes.protobuf) of Services and EndpointSlices and
// their lists, byte for byte as kube-apiserver writes them: the "k8s\0" prefix and runtime.Unknown envelope, fields
// in field-number order, Go's plain (non-pointer) fields always written even when empty, pointers only when set,
// map entries sorted by key. Field numbers are those of k8s.io/api's and k8s.io/apimachinery's generated.proto.
// Every field an object has must be known here: an object with one that is not (or a value of the wrong type, as
// the hostile-object tests serve) cannot be encoded, and the server then answers that list in JSON, as a real one
// would answer a kind it has no protobuf for.
import { MAGIC } from '../../src/watch/protobuf-wire.ts';

export class NotEncodable extends Error {}

type Scalar = 'string' | 'int32' | 'int64' | 'bool' | 'time' | 'json' | 'map' | 'intstr';
interface Field {
  json: string;
  n: number;
  type: Scalar | Schema;
  /** A list (repeated). */
  list?: boolean;
  /** A plain Go field: written even when absent (as its zero value). */
  always?: boolean;
}
type Schema = Field[];

const f = (json: string, n: number, type: Scalar | Schema, opts: { list?: boolean; always?: boolean } = {}): Field => ({ json, n, type, ...opts });
const always = { always: true };
const list = { list: true };

const OWNER_REFERENCE: Schema = [
  f('kind', 1, 'string', always),
  f('name', 3, 'string', always),
  f('uid', 4, 'string', always),
  f('apiVersion', 5, 'string', always),
  f('controller', 6, 'bool'),
  f('blockOwnerDeletion', 7, 'bool'),
];
const MANAGED_FIELDS_ENTRY: Schema = [
  f('manager', 1, 'string', always),
  f('operation', 2, 'string', always),
  f('apiVersion', 3, 'string', always),
  f('time', 4, 'time'),
  f('fieldsType', 6, 'string', always),
  f('fieldsV1', 7, 'json'),
  f('subresource', 8, 'string', always),
];
const OBJECT_META: Schema = [
  f('name', 1, 'string', always),
  f('generateName', 2, 'string', always),
  f('namespace', 3, 'string', always),
  f('selfLink', 4, 'string', always),
  f('uid', 5, 'string', always),
  f('resourceVersion', 6, 'string', always),
  f('generation', 7, 'int64', always),
  f('creationTimestamp', 8, 'time', always),
  f('deletionTimestamp', 9, 'time'),
  f('deletionGracePeriodSeconds', 10, 'int64'),
  f('labels', 11, 'map'),
  f('annotations', 12, 'map'),
  f('ownerReferences', 13, OWNER_REFERENCE, list),
  f('finalizers', 14, 'string', list),
  f('managedFields', 17, MANAGED_FIELDS_ENTRY, list),
];
const CONDITION: Schema = [
  f('type', 1, 'string', always),
  f('status', 2, 'string', always),
  f('observedGeneration', 3, 'int64', always),
  f('lastTransitionTime', 4, 'time', always),
  f('reason', 5, 'string', always),
  f('message', 6, 'string', always),
];

const SERVICE: Schema = [
  f('metadata', 1, OBJECT_META, always),
  f(
    'spec',
    2,
    [
      f(
        'ports',
        1,
        [
          f('name', 1, 'string', always),
          f('protocol', 2, 'string', always),
          f('port', 3, 'int32', always),
          f('targetPort', 4, 'intstr', always),
          f('nodePort', 5, 'int32', always),
          f('appProtocol', 6, 'string'),
        ],
        list,
      ),
      f('selector', 2, 'map'),
      f('clusterIP', 3, 'string', always),
      f('type', 4, 'string', always),
      f('externalIPs', 5, 'string', list),
      f('sessionAffinity', 7, 'string', always),
      f('loadBalancerIP', 8, 'string', always),
      f('loadBalancerSourceRanges', 9, 'string', list),
      f('externalName', 10, 'string', always),
      f('externalTrafficPolicy', 11, 'string', always),
      f('healthCheckNodePort', 12, 'int32', always),
      f('publishNotReadyAddresses', 13, 'bool', always),
      f('sessionAffinityConfig', 14, [f('clientIP', 1, [f('timeoutSeconds', 1, 'int32')])]),
      f('ipFamilyPolicy', 17, 'string'),
      f('clusterIPs', 18, 'string', list),
      f('ipFamilies', 19, 'string', list),
      f('allocateLoadBalancerNodePorts', 20, 'bool'),
      f('loadBalancerClass', 21, 'string'),
      f('internalTrafficPolicy', 22, 'string'),
      f('trafficDistribution', 23, 'string'),
    ],
    always,
  ),
  f(
    'status',
    3,
    [
      f(
        'loadBalancer',
        1,
        [
          f(
            'ingress',
            1,
            [
              f('ip', 1, 'string', always),
              f('hostname', 2, 'string', always),
              f('ipMode', 3, 'string'),
              f('ports', 4, [f('port', 1, 'int32', always), f('protocol', 2, 'string', always), f('error', 3, 'string')], list),
            ],
            list,
          ),
        ],
        always,
      ),
      f('conditions', 2, CONDITION, list),
    ],
    always,
  ),
];

const OBJECT_REFERENCE: Schema = [
  f('kind', 1, 'string', always),
  f('namespace', 2, 'string', always),
  f('name', 3, 'string', always),
  f('uid', 4, 'string', always),
  f('apiVersion', 5, 'string', always),
  f('resourceVersion', 6, 'string', always),
  f('fieldPath', 7, 'string', always),
];
const NAMED: Schema = [f('name', 1, 'string', always)];
const ENDPOINT_SLICE: Schema = [
  f('metadata', 1, OBJECT_META, always),
  f(
    'endpoints',
    2,
    [
      f('addresses', 1, 'string', list),
      f('conditions', 2, [f('ready', 1, 'bool'), f('serving', 2, 'bool'), f('terminating', 3, 'bool')], always),
      f('hostname', 3, 'string'),
      f('targetRef', 4, OBJECT_REFERENCE),
      f('deprecatedTopology', 5, 'map'),
      f('nodeName', 6, 'string'),
      f('zone', 7, 'string'),
      f('hints', 8, [f('forZones', 1, NAMED, list), f('forNodes', 2, NAMED, list)]),
    ],
    list,
  ),
  f('ports', 3, [f('name', 1, 'string'), f('protocol', 2, 'string'), f('port', 3, 'int32'), f('appProtocol', 4, 'string')], list),
  f('addressType', 4, 'string', always),
];

/** The kinds served in protobuf: their item schema, and apiVersion of the list. */
export const PROTOBUF_KINDS = {
  Service: { schema: SERVICE, apiVersion: 'v1' },
  EndpointSlice: { schema: ENDPOINT_SLICE, apiVersion: 'discovery.k8s.io/v1' },
} as const;
export type ProtobufKind = keyof typeof PROTOBUF_KINDS;

// ---- the wire format ----

/**
 * One growable buffer the whole item is written into. A nested message's length is not known before it is
 * written: room for the longest length varint is left, the message written after it, and moved back over
 * what the actual varint did not use.
 */
class Writer {
  buf = Buffer.allocUnsafe(1 << 16);
  pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  varint(v: number): void {
    this.room(10);
    if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      let x = v;
      while (x >= 0x80) {
        this.buf[this.pos++] = (x % 0x80) | 0x80;
        x = Math.floor(x / 0x80);
      }
      this.buf[this.pos++] = x;
      return;
    }
    // Negative numbers are their 64-bit two's complement: ten bytes.
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
  }

  tag(n: number, wire: number): void {
    this.varint(n * 8 + wire);
  }

  bytes(n: number, b: Uint8Array): void {
    this.tag(n, 2);
    this.varint(b.length);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  string(n: number, s: string): void {
    const length = Buffer.byteLength(s);
    this.tag(n, 2);
    this.varint(length);
    this.room(length);
    this.pos += this.buf.write(s, this.pos);
  }

  /** Field n, length-delimited, its content written by `content`. */
  nested(n: number, content: () => void): void {
    this.tag(n, 2);
    this.room(5);
    const lengthAt = this.pos;
    this.pos += 5;
    content();
    const length = this.pos - lengthAt - 5;
    let varintBytes = 1;
    for (let x = length; x >= 0x80; x = Math.floor(x / 0x80)) varintBytes++;
    this.pos = lengthAt;
    this.varint(length);
    if (varintBytes < 5) this.buf.copyWithin(lengthAt + varintBytes, lengthAt + 5, lengthAt + 5 + length);
    this.pos = lengthAt + varintBytes + length;
  }

  take(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function integer(v: unknown, bits: 32 | 64, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new NotEncodable(`${where}: not an integer`);
  if (bits === 32 && (v < -(2 ** 31) || v >= 2 ** 31)) throw new NotEncodable(`${where}: not an int32`);
  return v;
}

/** An RFC 3339 time as metav1.Time's seconds (absent: Go's zero time); nanos 0. */
function timeSeconds(v: unknown, where: string): number {
  if (v === undefined || v === null) return -62135596800;
  const ms = typeof v === 'string' ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(ms)) throw new NotEncodable(`${where}: not a time`);
  return Math.floor(ms / 1000);
}

function scalar(w: Writer, field: Field, v: unknown, where: string): void {
  const { n } = field;
  switch (field.type) {
    case 'string':
      if (typeof v !== 'string') throw new NotEncodable(`${where}: not a string`);
      return w.string(n, v);
    case 'int32':
    case 'int64':
      w.tag(n, 0);
      return w.varint(integer(v, field.type === 'int32' ? 32 : 64, where));
    case 'bool':
      if (typeof v !== 'boolean') throw new NotEncodable(`${where}: not a boolean`);
      w.tag(n, 0);
      return w.varint(v ? 1 : 0);
    case 'time': {
      const seconds = timeSeconds(v, where);
      return w.nested(n, () => {
        w.tag(1, 0);
        w.varint(seconds);
        w.tag(2, 0);
        w.varint(0);
      });
    }
    case 'json':
      // FieldsV1: its JSON text as the bytes of field 1.
      return w.nested(n, () => w.string(1, JSON.stringify(v)));
    case 'intstr': {
      const s = v === undefined ? 0 : v;
      const int = typeof s === 'string' ? 0 : integer(s, 32, where);
      return w.nested(n, () => {
        w.tag(1, 0);
        w.varint(typeof s === 'string' ? 1 : 0);
        w.tag(2, 0);
        w.varint(int);
        w.string(3, typeof s === 'string' ? s : '');
      });
    }
    case 'map': {
      if (!isRecord(v)) throw new NotEncodable(`${where}: not a map`);
      for (const k of Object.keys(v).sort()) {
        const value = v[k];
        if (typeof value !== 'string') throw new NotEncodable(`${where}.${k}: not a string`);
        w.nested(n, () => {
          w.string(1, k);
          w.string(2, value);
        });
      }
      return;
    }
    default: {
      const schema = field.type;
      return w.nested(n, () => writeMessage(w, v, schema, where));
    }
  }
}

const ZERO: Record<Scalar, unknown> = { string: '', int32: 0, int64: 0, bool: false, time: undefined, json: {}, map: {}, intstr: 0 };
const SORTED = new WeakMap<Schema, { fields: Field[]; known: Set<string> }>();

/** A message of `schema` from a JSON object; throws NotEncodable for an unknown field or a value of the wrong type. */
function writeMessage(w: Writer, v: unknown, schema: Schema, where: string): void {
  const o = v === undefined ? {} : v;
  if (!isRecord(o)) throw new NotEncodable(`${where}: not an object`);
  let s = SORTED.get(schema);
  if (!s) SORTED.set(schema, (s = { fields: [...schema].sort((a, b) => a.n - b.n), known: new Set(schema.map((x) => x.json)) }));
  for (const k in o) if (!s.known.has(k)) throw new NotEncodable(`${where}.${k}: not in the protobuf schema`);
  for (const field of s.fields) {
    let value = o[field.json];
    if (value === null) value = undefined;
    if (field.list) {
      if (value === undefined) continue;
      if (!Array.isArray(value)) throw new NotEncodable(`${where}.${field.json}: not a list`);
      for (const x of value) scalar(w, field, x, `${where}.${field.json}[]`);
      continue;
    }
    if (value === undefined) {
      if (!field.always) continue;
      value = typeof field.type === 'string' ? ZERO[field.type] : {};
    }
    scalar(w, field, value, `${where}.${field.json}`);
  }
}

const writer = new Writer();

/** What `content` writes, as a buffer of its own. */
function frame(content: (w: Writer) => void): Buffer {
  writer.pos = 0;
  content(writer);
  return writer.take();
}

const encodeMessage = (v: unknown, schema: Schema, where: string): Buffer => frame((w) => writeMessage(w, v, schema, where));

/** One item of a list of `kind` (its apiVersion and kind left out, as Go leaves them out of a typed list's items). */
export function encodeItem(kind: ProtobufKind, object: Record<string, unknown>): Buffer {
  const { apiVersion: _a, kind: _k, ...rest } = object;
  return encodeMessage(rest, PROTOBUF_KINDS[kind].schema, kind);
}

const TYPE_META: Schema = [f('apiVersion', 1, 'string', always), f('kind', 2, 'string', always)];
const LIST_META: Schema = [f('selfLink', 1, 'string', always), f('resourceVersion', 2, 'string', always), f('continue', 3, 'string', always)];

/** runtime.Unknown's typeMeta (field 1) for an object of `kind` (e.g. ServiceList) of the kind's API version. */
const writeTypeMeta = (w: Writer, kind: ProtobufKind, name: string) =>
  w.nested(1, () => writeMessage(w, { apiVersion: PROTOBUF_KINDS[kind].apiVersion, kind: name }, TYPE_META, 'typeMeta'));

/** runtime.Unknown's last fields, contentEncoding and contentType: plain strings, written empty. */
function writeEnvelopeEnd(w: Writer): void {
  w.string(3, '');
  w.string(4, '');
}

/**
 * The pieces of a list answer of `kind`: the head (prefix, envelope, ListMeta, and the length of the list, which
 * covers the items to come) and the tail after the items. Each item goes between them as listEntry(item).
 */
export function listFrame(kind: ProtobufKind, resourceVersion: string, itemBytes: number): { head: Buffer; tail: Buffer } {
  const listMeta = frame((w) => w.nested(1, () => writeMessage(w, { resourceVersion }, LIST_META, 'metadata')));
  const head = frame((w) => {
    writeTypeMeta(w, kind, `${kind}List`);
    w.tag(2, 2);
    w.varint(listMeta.length + itemBytes);
  });
  return { head: Buffer.concat([MAGIC, head, listMeta]), tail: frame(writeEnvelopeEnd) };
}

/** A whole object as the API server answers a GET of it: "k8s\0" and the envelope around encodeItem's bytes. */
export function encodeObject(kind: ProtobufKind, object: Record<string, unknown>): Buffer {
  const item = encodeItem(kind, object);
  return Buffer.concat([
    MAGIC,
    frame((w) => {
      writeTypeMeta(w, kind, kind);
      w.bytes(2, item);
      writeEnvelopeEnd(w);
    }),
  ]);
}

/** An item as it sits in its list: field 2, length-delimited. */
export const listEntry = (item: Buffer): Buffer => frame((w) => w.bytes(2, item));
