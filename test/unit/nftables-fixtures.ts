// Helpers for the nftables mode's tests (model objects come from model-fixtures.ts).
import { checkPort, type ElemList, type RenderedPort, renderPort } from '../../src/modes/nftables/elements.ts';
import { SlotAllocator } from '../../src/modes/nftables/slots.ts';
import { categorizeEndpoints } from '../../src/model/endpoints.ts';
import type { Endpoint, ServicePort } from '../../src/model/types.ts';
import { NODE } from './model-fixtures.ts';

export { NODE, config, desiredState, endpoint, servicePort, type EndpointSpec, type PortSpec } from './model-fixtures.ts';

/** The elements of one service port of its own family, as the planner renders it when the port owns its frontends. */
export function render(sp: ServicePort, nodeIPs: readonly string[] = []): RenderedPort {
  const slots = new SlotAllocator(() => 0);
  return renderPort(checkPort(sp, sp.family), { nodeIPs, owns: () => true, slots: (id, ids, hold) => slots.assign(id, ids, hold) });
}

/** `sp` with other endpoints, and the model's endpoint decision for them (as an EndpointSlice change gives it). */
export function withEndpoints(sp: ServicePort, endpoints: readonly Endpoint[]): ServicePort {
  const sorted = [...endpoints].sort((a, b) => (a.id < b.id ? -1 : 1));
  return { ...sp, allEndpoints: sorted, ...categorizeEndpoints(sorted, sp, { name: NODE, zone: '' }) };
}

/** The elements of `set` in a flat element list, keys and values parsed from their JSON. */
export function elemsOf(list: ElemList, set: string): { key: unknown; value: unknown; comment?: string }[] {
  const out: { key: unknown; value: unknown; comment?: string }[] = [];
  for (let i = 0; i < list.length; i += 3) {
    if (list[i] !== set) continue;
    const key = list[i + 1]!;
    const value = list[i + 2];
    const parsedKey = /^([{["]|\d+$)/.test(key) ? JSON.parse(key) : key;
    const k = typeof parsedKey === 'object' && parsedKey && 'concat' in parsedKey ? (parsedKey as { concat: unknown[] }).concat : parsedKey;
    if (value === null || value === undefined) {
      out.push({ key: k, value: null });
      continue;
    }
    const nul = value.indexOf('\u0000');
    if (nul >= 0) out.push({ key: k, value: JSON.parse(value.slice(nul + 1)), comment: JSON.parse(value.slice(0, nul)) });
    else out.push({ key: k, value: JSON.parse(value) });
  }
  return out;
}

/** The distinct keys of a (pseudo-)set in a flat element list. */
export function keysOf(list: ElemList, set: string): unknown[] {
  return [...new Set(elemsOf(list, set).map((e) => JSON.stringify(e.key)))].map((k) => JSON.parse(k));
}

/** Every command of an nft JSON batch, as [verb, object kind, body] (the metainfo that opens a batch is no command). */
export function commands(json: string): [string, string, Record<string, unknown>][] {
  const doc = JSON.parse(json) as { nftables: Record<string, Record<string, Record<string, unknown>>>[] };
  return doc.nftables
    .filter((c) => !('metainfo' in c))
    .map((c) => {
      const verb = Object.keys(c)[0]!;
      const kind = Object.keys(c[verb]!)[0]!;
      return [verb, kind, c[verb]![kind]!];
    });
}
