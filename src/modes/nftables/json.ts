// nft JSON text for the table: declarations, rules and elements. Elements arrive as JSON fragments
// (elements.ts builds them from validated values) and are written straight to text: a 10,000-service
// table has a couple of hundred thousand of them. Everything else goes through JSON.stringify.
import { type ChainSpec, type Family, fieldType, type SetSchema, valueType } from './layout.ts';
import { TABLE } from './names.ts';

/** One element as it appears in an `elem` list of an add (see ElemList; deletions list keys alone). */
export function elemJSON(key: string, value: string | null): string {
  if (value === null) return key;
  const nul = value.indexOf('\u0000');
  if (nul < 0) return `[${key},${value}]`;
  return `[{"elem":{"val":${key},"comment":${value.slice(0, nul)}}},${value.slice(nul + 1)}]`;
}

const CHUNK = 50000;

/** Opens every batch, as nft's own JSON output does: the schema version the commands are written for. */
const METAINFO = '{"metainfo":{"json_schema_version":1}}';
const HEAD = `{"nftables":[\n${METAINFO}`;
const TAIL = '\n]}\n';

/** Builds one nft JSON batch ({"nftables": [...]}) command by command. */
export class Batch {
  private readonly parts: string[] = [];
  private readonly fam: Family;
  private readonly schemas: ReadonlyMap<string, SetSchema>;

  constructor(fam: Family, schemas: ReadonlyMap<string, SetSchema>) {
    this.fam = fam;
    this.schemas = schemas;
  }

  /** Commands so far. */
  get size(): number {
    return this.parts.length;
  }

  private ref(): string {
    return `"family":${JSON.stringify(this.fam.nft)},"table":${JSON.stringify(TABLE)}`;
  }

  private cmd(verb: string, obj: string, body: string): void {
    this.parts.push(`{"${verb}":{"${obj}":{${body}}}}`);
  }

  table(verb: 'add' | 'delete'): void {
    this.cmd(verb, 'table', `"family":${JSON.stringify(this.fam.nft)},"name":${JSON.stringify(TABLE)}`);
  }

  chain(verb: 'add' | 'flush' | 'delete', c: Pick<ChainSpec, 'name' | 'base'>): void {
    let body = `${this.ref()},"name":${JSON.stringify(c.name)}`;
    if (verb === 'add' && c.base) body += `,"type":"${c.base.type}","hook":"${c.base.hook}","prio":${c.base.prio},"policy":"accept"`;
    this.cmd(verb, 'chain', body);
  }

  set(s: SetSchema): void {
    const type = s.key.map((f) => fieldType(f, this.fam));
    let body = `${this.ref()},"name":${JSON.stringify(s.name)},"type":${JSON.stringify(type.length === 1 ? type[0] : type)}`;
    if (s.value) body += `,"map":${JSON.stringify(valueType(s.value, this.fam))}`;
    if (s.flags) body += `,"flags":${JSON.stringify(s.flags)}`;
    if (s.size) body += `,"size":${s.size}`;
    this.cmd('add', s.value ? 'map' : 'set', body);
  }

  rule(chain: string, expr: unknown[]): void {
    this.cmd('add', 'rule', `${this.ref()},"chain":${JSON.stringify(chain)},"expr":${JSON.stringify(expr)}`);
  }

  /** Adds or deletes elements of one set, given as their JSON text (elemJSON); in chunks, to keep single commands moderate. */
  elements(verb: 'add' | 'delete', set: string, elems: readonly string[]): void {
    if (!this.schemas.has(set)) throw new Error(`unknown set ${set}`);
    for (let i = 0; i < elems.length; i += CHUNK) {
      const chunk = i === 0 && elems.length <= CHUNK ? elems : elems.slice(i, i + CHUNK);
      this.cmd(verb, 'element', `${this.ref()},"name":${JSON.stringify(set)},"elem":[${chunk.join(',')}]`);
    }
  }

  text(): string {
    return this.parts.length === 0 ? `${HEAD}${TAIL}` : `${HEAD},\n${this.parts.join(',\n')}${TAIL}`;
  }
}

/**
 * One batch of the commands of several (each from Batch.text()), in order and with one metainfo: both
 * families' tables load in one `nft -j -f` transaction. Text work, not JSON.parse: a dry run of a large
 * cluster is tens of megabytes.
 */
export function combineBatches(...batches: string[]): string {
  const bodies = batches.map((b) => {
    if (!b.startsWith(HEAD) || !b.endsWith(TAIL)) throw new Error('not a batch of this mode');
    return b.slice(HEAD.length, b.length - TAIL.length);
  });
  return `${HEAD}${bodies.join('')}${TAIL}`;
}
