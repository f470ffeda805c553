// api-list.ts: a list answer read item by item, whatever the chunk boundaries.
import { describe, expect, it } from 'vitest';
import { ListScanner } from '../../src/watch/api-list.ts';

function scan(text: string, cut: number[]): { items: unknown[]; head: ReturnType<ListScanner['end']> } {
  const items: unknown[] = [];
  const s = new ListScanner((o) => items.push(o));
  const bytes = Buffer.from(text, 'utf8');
  let at = 0;
  for (const c of [...cut, bytes.length]) {
    s.push(bytes.subarray(at, c));
    at = c;
  }
  return { items, head: s.end() };
}

const LIST = {
  kind: 'ServiceList',
  apiVersion: 'v1',
  metadata: { resourceVersion: '42', 'x"}]': 'y' },
  items: [
    { metadata: { name: 'a', labels: { 'k}': 'v]{"' } }, spec: { ports: [{ port: 80 }] } },
    null,
    7,
    'str',
    [1, 2],
    { metadata: { name: 'é ü 日本', annotations: { a: 'line\\n"quoted"\\\\' } } },
  ],
};

describe('ListScanner', () => {
  it('yields every object item and the resourceVersion at any chunk boundary', () => {
    const text = JSON.stringify(LIST, null, 1);
    const objects = LIST.items.filter((i) => typeof i === 'object' && i !== null && !Array.isArray(i));
    for (let c = 0; c <= Buffer.byteLength(text); c++) {
      const r = scan(text, [c]);
      expect(r.items).toEqual(objects);
      expect(r.head).toEqual({ resourceVersion: '42', notObjects: 4 });
    }
    // byte by byte
    const every = Array.from({ length: Buffer.byteLength(text) }, (_, i) => i);
    expect(scan(JSON.stringify(LIST), every).items).toEqual(objects);
  });

  it('takes items: null and a list without metadata', () => {
    expect(scan('{"kind":"List","items":null}', [])).toEqual({ items: [], head: { resourceVersion: '', notObjects: 0 } });
    expect(scan('{"items":[]}', [3]).head.resourceVersion).toBe('');
  });

  it('refuses what is not a list', () => {
    for (const bad of [
      '[]',
      '{"kind":"Status"}',
      '{"items":{}}',
      '{"items":[{"a":}]}',
      '{"items":[',
      '{"items":[]} x',
      '{"items":[]} {}',
      '{"items":[,]}',
      '{"items":[{},]}',
      '{"items":[{}]',
    ]) {
      expect(() => scan(bad, []), bad).toThrow();
    }
  });
});
