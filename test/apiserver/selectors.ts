// Label and field selectors as the API server parses them (the subset of the grammar list/watch clients use):
// `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`; fields: `f=v`, `f==v`, `f!=v`.

export class SelectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SelectorError';
  }
}

type Op = 'exists' | 'notExists' | 'eq' | 'neq' | 'in' | 'notin';
interface Requirement {
  key: string;
  op: Op;
  values: string[];
}

/** A parsed selector: matches a map of labels (or of field values). An empty selector matches everything. */
export interface Selector {
  readonly text: string;
  matches(values: Record<string, string | undefined>): boolean;
}

/** Splits on commas that are not inside parentheses. */
function splitTerms(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

function parseTerm(term: string): Requirement {
  let m = /^!\s*([^\s=!(),]+)$/.exec(term);
  if (m) return { key: m[1], op: 'notExists', values: [] };
  m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(term);
  if (m) {
    const values = m[3]
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v !== '');
    return { key: m[1], op: m[2] === 'in' ? 'in' : 'notin', values };
  }
  m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(term);
  if (m) return { key: m[1], op: m[2] === '!=' ? 'neq' : 'eq', values: [m[3]] };
  m = /^([^\s=!(),]+)$/.exec(term);
  if (m) return { key: m[1], op: 'exists', values: [] };
  throw new SelectorError(`unable to parse requirement: ${JSON.stringify(term)}`);
}

function matchOne(r: Requirement, values: Record<string, string | undefined>): boolean {
  const v = Object.hasOwn(values, r.key) ? values[r.key] : undefined;
  switch (r.op) {
    case 'exists':
      return v !== undefined;
    case 'notExists':
      return v === undefined;
    case 'eq':
      return v === r.values[0];
    case 'neq':
      return v !== r.values[0];
    case 'in':
      return v !== undefined && r.values.includes(v);
    case 'notin':
      return v === undefined || !r.values.includes(v);
  }
}

function build(text: string, reqs: Requirement[]): Selector {
  return { text, matches: (values) => reqs.every((r) => matchOne(r, values)) };
}

export function parseLabelSelector(text: string | null | undefined): Selector {
  const t = text ?? '';
  return build(t, splitTerms(t).map(parseTerm));
}

/** Field selectors support equality only, on the fields given (the API server rejects other fields). */
export function parseFieldSelector(text: string | null | undefined, supported: readonly string[]): Selector {
  const t = text ?? '';
  const reqs = splitTerms(t).map((term) => {
    const r = parseTerm(term);
    if (r.op !== 'eq' && r.op !== 'neq') throw new SelectorError(`invalid field selector: ${JSON.stringify(term)}`);
    if (!supported.includes(r.key)) throw new SelectorError(`field label not supported: ${r.key}`);
    return r;
  });
  return build(t, reqs);
}
