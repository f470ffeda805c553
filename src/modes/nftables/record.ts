// The planner's record of one service port's elements, as one flat string. The planner keeps it only to
// diff the port when it changes (nft deletes an element by its key text), so it is decoded only then.
//
// A list of (set, key, value) triples at 10,000 x 10 is ~170,000 keys and values: a V8 string each (a
// 16-byte header, and the 8-byte slots of the arrays holding them). One string per port holds the same
// text in about a third of the bytes:
// - each element is the line  key \x01 set-code value  (value left out when null: values are never empty);
// - the set name is one character of a fixed table (KEY_END_AND_CODE);
// - each line is front-coded: one character gives how many leading characters it shares with the line
//   before (at most 254, so the string stays one byte a character), then the rest of it, then \x02;
// - the character 255 in place of a line starts the shared elements.
// Consecutive keys of a port share their frontend (`{"concat":["198.18.100.1","tcp",80,`), so a DNAT
// element costs its slot's last digits and its address. The control characters cannot occur in a key or
// value: both are JSON text (which escapes control characters) or addresses and numbers (elements.ts).
import type { ElemList } from './elements.ts';
import { COUNT_GROUPS, KEY_KINDS, setSchemas } from './layout.ts';
import { countsPseudoSet, timeoutsPseudoSet } from './names.ts';

const KEY_END = '\u0001';
const LINE_END = '\u0002';
/** The most leading characters a line takes from the line before: one byte, 255 being SHARED_FROM. */
const MAX_SHARED = 0xfe;
/** In place of a line: the shared elements start. */
const SHARED_FROM = 0xff;

/** Every set and pseudo-set name an element may name, and its one-character code (from 'A' on, one byte). */
const SET_NAMES: readonly string[] = [...setSchemas().map((s) => s.name), ...COUNT_GROUPS.map(countsPseudoSet), ...KEY_KINDS.map(timeoutsPseudoSet)];
const FIRST_CODE = 0x41;
if (FIRST_CODE + SET_NAMES.length > 0x100) throw new Error('too many sets for one-byte set codes');
const KEY_END_AND_CODE = new Map(SET_NAMES.map((name, i) => [name, KEY_END + String.fromCharCode(FIRST_CODE + i)]));

/** Scratch pieces of the string being encoded (one encode at a time: the planner is synchronous). */
const pieces: string[] = [];

/** How many leading characters a and b share, given that they share `from`. */
function sharedLength(a: string, b: string, from = 0): number {
  const n = a.length < b.length ? a.length : b.length;
  let i = from;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/**
 * How many leading characters a key shares with the previous one. Keys of one frontend differ in their
 * last field, so the part up to the previous key's last comma is compared at once (a string comparison
 * in the engine, much faster than a character at a time here), the rest character by character.
 */
function sharedKeyLength(prev: string, key: string): number {
  const c = prev.lastIndexOf(',');
  const sure = c > 0 && key.charCodeAt(c) === 44 && key.slice(0, c) === prev.slice(0, c);
  return sharedLength(prev, key, sure ? c + 1 : 0);
}

/** One flat string for the elements of `own` followed by those of `shared` (see the top of this file). */
export function encodeElems(own: ElemList, shared: ElemList): string {
  let prevKey = '';
  let prevCode = '';
  let prevValue = '';
  for (let l = 0; l < 2; l++) {
    const list = l === 0 ? own : shared;
    if (l === 1 && shared.length > 0) pieces.push(String.fromCharCode(SHARED_FROM));
    for (let i = 0; i < list.length; i += 3) {
      const key = list[i + 1]!;
      // KEY_END and the set's code, as one piece.
      const code = KEY_END_AND_CODE.get(list[i]!);
      if (code === undefined) throw new Error(`no code for set ${list[i]}`);
      const value = list[i + 2] ?? '';
      if (value === '' && list[i + 2] !== null) throw new Error(`an empty value in ${list[i]}`);
      // Length shared with the previous line: the key, then (the whole key shared) its end, code and value.
      let n = sharedKeyLength(prevKey, key);
      if (n === key.length && n === prevKey.length && code === prevCode) n += 2 + sharedLength(prevValue, value);
      if (n > MAX_SHARED) n = MAX_SHARED;
      pieces.push(String.fromCharCode(n));
      if (n <= key.length) pieces.push(n === 0 ? key : key.slice(n), code, value, LINE_END);
      else if (n === key.length + 1) pieces.push(code.slice(1), value, LINE_END);
      else pieces.push(value.slice(n - key.length - 2), LINE_END);
      prevKey = key;
      prevCode = code;
      prevValue = value;
    }
  }
  const text = pieces.join('');
  pieces.length = 0;
  return text;
}

/** The element lists encodeElems was given, in their order. */
export function decodeElems(text: string): { elems: ElemList; shared: ElemList } {
  const elems: ElemList = [];
  const shared: ElemList = [];
  let list = elems;
  let prev = '';
  let pos = 0;
  while (pos < text.length) {
    const n = text.charCodeAt(pos);
    if (n === SHARED_FROM) {
      list = shared;
      pos++;
      continue;
    }
    const end = text.indexOf(LINE_END, pos + 1);
    const line = prev.slice(0, n) + text.slice(pos + 1, end);
    const k = line.indexOf(KEY_END);
    const set = SET_NAMES[line.charCodeAt(k + 1) - FIRST_CODE]!;
    list.push(set, line.slice(0, k), line.length > k + 2 ? line.slice(k + 2) : null);
    prev = line;
    pos = end + 1;
  }
  return { elems, shared };
}
