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

/** Key and value JSON texts of elements side by side (value null for a key alone: see Batch.elements). */
type Pairs = readonly (string | null)[];

/** An element command whose elements are written out only when the batch is: its opening text and its elements. */
interface ElementsCommand {
  head: string;
  pairs: Pairs;
}

/** Element commands made only when the batch is written (see Batch.elementGroups). */
interface ElementGroups {
  verb: 'add' | 'delete';
  groups: () => Iterable<ReadonlyMap<string, Pairs>>;
}

/** The elements of pairs[from, to) (key, value side by side), as the comma-separated list of an `elem` array. */
function elemsText(pairs: Pairs, from: number, to: number): string {
  const out: string[] = [];
  for (let i = from; i < to; i += 2) out.push(elemJSON(pairs[i]!, pairs[i + 1]!));
  return out.join(',');
}

/** What closes an element command (see Batch.elements). */
const ELEMENTS_END = ']}}}';
/** Elements per piece when a batch is written in pieces (Batch.chunks). */
const ELEMS_PER_PIECE = 1000;

/** Builds one nft JSON batch ({"nftables": [...]}) command by command. */
export class Batch {
  private readonly parts: (string | ElementsCommand | ElementGroups)[] = [];
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

  /**
   * Adds or deletes elements of one set, given as key and value JSON texts side by side (value null for a key
   * alone: a set's element, or a deletion); in chunks, to keep single commands moderate. Each element's text
   * (elemJSON) is made only when the batch is written (text, chunks).
   */
  elements(verb: 'add' | 'delete', set: string, pairs: Pairs): void {
    this.parts.push(...this.elementCommands(verb, set, pairs));
  }

  /**
   * Element commands whose elements are made only when the batch is written, by `groups`, called each time it
   * is (so it must give the same groups each time): per group, per set in the map's order, the commands of
   * elements(). A full table's elements are a couple of hundred thousand: made a group at a time, they are
   * never all in memory at once.
   */
  elementGroups(verb: 'add' | 'delete', groups: () => Iterable<ReadonlyMap<string, Pairs>>): void {
    this.parts.push({ verb, groups });
  }

  private elementCommands(verb: 'add' | 'delete', set: string, pairs: Pairs): ElementsCommand[] {
    if (!this.schemas.has(set)) throw new Error(`unknown set ${set}`);
    const head = `{"${verb}":{"element":{${this.ref()},"name":${JSON.stringify(set)},"elem":[`;
    const out: ElementsCommand[] = [];
    for (let i = 0; i < pairs.length; i += 2 * CHUNK) {
      out.push({ head, pairs: i === 0 && pairs.length <= 2 * CHUNK ? pairs : pairs.slice(i, i + 2 * CHUNK) });
    }
    return out;
  }

  /** The batch as one text: its pieces (chunks), joined once. */
  text(): string {
    return [...this.chunks()].join('');
  }

  /** The batch's text in pieces of at most a command (or ELEMS_PER_PIECE elements), made as they are iterated. */
  *chunks(): Generator<string> {
    yield HEAD;
    for (const p of this.parts) {
      if (typeof p === 'string') yield `,\n${p}`;
      else if ('head' in p) yield* elementsPieces(p);
      else {
        for (const group of p.groups()) {
          for (const [set, pairs] of group) for (const c of this.elementCommands(p.verb, set, pairs)) yield* elementsPieces(c);
        }
      }
    }
    yield TAIL;
  }
}

/** One element command's text, in pieces of ELEMS_PER_PIECE elements. */
function* elementsPieces(c: ElementsCommand): Generator<string> {
  yield `,\n${c.head}`;
  for (let i = 0; i < c.pairs.length; i += 2 * ELEMS_PER_PIECE) {
    const piece = elemsText(c.pairs, i, Math.min(c.pairs.length, i + 2 * ELEMS_PER_PIECE));
    yield i === 0 ? piece : `,${piece}`;
  }
  yield ELEMENTS_END;
}

/**
 * One batch of the commands of several (each from Batch.text() or Batch.chunks(): one string or its pieces), in
 * order and with one metainfo: both families' tables load in one `nft -j -f` transaction. Text work, piece by
 * piece: a dry run of a large cluster is tens of megabytes.
 */
export function* combineBatches(...batches: Iterable<string>[]): Generator<string> {
  yield HEAD;
  for (const batch of batches) {
    // The batch without its HEAD (the start of its first piece) and its TAIL (the end of its last piece).
    let last: string | null = null;
    // A string is one piece (iterated, it would be its characters).
    for (const piece of typeof batch === 'string' ? [batch] : batch) {
      if (last === null) {
        if (!piece.startsWith(HEAD)) throw new Error('not a batch of this mode');
        last = piece.slice(HEAD.length);
        continue;
      }
      yield last;
      last = piece;
    }
    if (last === null || !last.endsWith(TAIL)) throw new Error('not a batch of this mode');
    yield last.slice(0, last.length - TAIL.length);
  }
  yield TAIL;
}
