// Strict address and CIDR parsing. Rule renderers only ever see strings that passed through here.
import { isIPv6 } from 'node:net';
import type { IPFamily } from './types.ts';

const V4_OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** Parses a dotted-quad IPv4 address; rejects leading zeros, out-of-range octets and anything else. */
export function parseIPv4(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!V4_OCTET.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

export function formatIPv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** The family of a valid address, or null when it is not a valid address. IPv6 is returned in canonical lower-case form. */
export function classifyIP(s: unknown): { family: IPFamily; ip: string } | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 45) return null;
  if (parseIPv4(s) !== null) return { family: 'IPv4', ip: s };
  if (isIPv6(s) && !s.includes('%') && !s.includes('.')) return { family: 'IPv6', ip: canonicalIPv6(s) };
  return null;
}

function canonicalIPv6(s: string): string {
  // Expand then compress (RFC 5952) so equal addresses compare equal as strings.
  const [head, tail] = s.toLowerCase().split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const words = groups.map((g) => Number.parseInt(g, 16).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return words.join(':');
  return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
}

/** Parses "a.b.c.d/n" (or an IPv6 CIDR) and returns it normalised to its network address, or null. */
export function parseCIDR(s: unknown): { family: IPFamily; cidr: string } | null {
  if (typeof s !== 'string') return null;
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const addr = s.slice(0, slash).trim();
  const lenText = s.slice(slash + 1).trim();
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return null;
  const len = Number(lenText);
  const v4 = parseIPv4(addr);
  if (v4 !== null) {
    if (len > 32) return null;
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    return { family: 'IPv4', cidr: `${formatIPv4((v4 & mask) >>> 0)}/${len}` };
  }
  const v6 = classifyIP(addr);
  if (v6?.family === 'IPv6') {
    if (len > 128) return null;
    return { family: 'IPv6', cidr: `${v6.ip}/${len}` };
  }
  return null;
}

/** Whether an IPv4 address lies within an IPv4 CIDR (both already valid). */
export function ipv4InCIDR(ip: string, cidr: string): boolean {
  const [net, lenText] = cidr.split('/') as [string, string];
  const a = parseIPv4(ip);
  const n = parseIPv4(net);
  if (a === null || n === null) return false;
  const len = Number(lenText);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return (a & mask) >>> 0 === (n & mask) >>> 0;
}

export function isValidPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

export function endpointId(ip: string, port: number, family: IPFamily): string {
  return family === 'IPv6' ? `[${ip}]:${port}` : `${ip}:${port}`;
}
