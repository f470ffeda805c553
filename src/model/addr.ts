// The one address module: IP, CIDR, port and protocol parsing, canonical forms, containment, and the one
// rule for values that may be written into a rule. Built on ipaddr.js; every other module (model, modes,
// explain, the CLI) goes through here. Canonical forms: IPv4 dotted quad without leading zeros, IPv6 in
// RFC 5952 form (lower case, longest zero run compressed), CIDRs as network address / prefix length.
import ipaddr from 'ipaddr.js';
import type { IPFamily, Protocol } from './types.ts';

export type { IPFamily };
export const FAMILIES: readonly IPFamily[] = ['IPv4', 'IPv6'];

/** A parsed address: its family and canonical text. */
export interface IP {
  family: IPFamily;
  ip: string;
}

/** A parsed CIDR: its family, canonical "network/len" text, network address and prefix length. */
export interface CIDR {
  family: IPFamily;
  cidr: string;
  network: string;
  prefix: number;
}

type Parsed = ipaddr.IPv4 | ipaddr.IPv6;

const familyOfParsed = (a: Parsed): IPFamily => (a.kind() === 'ipv4' ? 'IPv4' : 'IPv6');
const canonical = (a: Parsed): string => (a.kind() === 'ipv4' ? a.toString() : (a as ipaddr.IPv6).toRFC5952String());

/**
 * Strict parse: a dotted quad (no leading zeros, no shorthand such as "10.1") or an IPv6 address
 * without a zone and without an embedded IPv4 tail; anything else (surrounding space included) is null.
 */
function parseStrict(s: unknown): Parsed | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 45) return null;
  if (s.includes('.')) {
    const octets = ipv4Octets(s);
    return octets ? new ipaddr.IPv4(octets) : null;
  }
  if (!/^[0-9a-fA-F:]+$/.test(s) || !ipaddr.IPv6.isValid(s)) return null;
  return ipaddr.IPv6.parse(s);
}

/**
 * A canonical dotted quad (four octets 0-255 without leading zeros, nothing else) as its 32-bit value, or -1.
 * Read character by character: it runs for every endpoint address, twice (parseIP, specialAddress), and a
 * regular expression with its match array was a tenth of a 10,000-service list's parse.
 */
function ipv4Value(s: string): number {
  const n = s.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || ++dots > 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && octet === 0) return -1; // a leading zero
      octet = octet * 10 + (c - 0x30);
      if (octet > 255) return -1;
      digits++;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + octet;
}

/** The four octets of a canonical dotted quad, or null. */
function ipv4Octets(s: string): number[] | null {
  const v = ipv4Value(s);
  return v < 0 ? null : [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

/** The family and canonical text of a valid address, or null. */
export function parseIP(s: unknown): IP | null {
  // The hot path (every endpoint of every slice): a canonical dotted quad is its own canonical form.
  if (typeof s === 'string' && ipv4Value(s) >= 0) return { family: 'IPv4', ip: s };
  const a = parseStrict(s);
  return a ? { family: familyOfParsed(a), ip: canonical(a) } : null;
}

/** Parses "addr/len" and returns it normalised to its network address, or null. */
export function parseCIDR(s: unknown): CIDR | null {
  if (typeof s !== 'string') return null;
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const a = parseStrict(s.slice(0, slash).trim());
  const lenText = s.slice(slash + 1).trim();
  if (!a || !/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return null;
  const prefix = Number(lenText);
  const family = familyOfParsed(a);
  if (prefix > (family === 'IPv4' ? 32 : 128)) return null;
  const network = canonical(
    family === 'IPv4' ? ipaddr.IPv4.networkAddressFromCIDR(`${a.toString()}/${prefix}`) : ipaddr.IPv6.networkAddressFromCIDR(`${a.toString()}/${prefix}`),
  );
  return { family, cidr: `${network}/${prefix}`, network, prefix };
}

/** The family of an address or CIDR text, or null when it is neither. */
export function familyOf(addrOrCIDR: string): IPFamily | null {
  return addrOrCIDR.includes('/') ? (parseCIDR(addrOrCIDR)?.family ?? null) : (parseIP(addrOrCIDR)?.family ?? null);
}

/** Whether `ip` lies in `cidr` (false when either is invalid or their families differ). */
export function cidrContains(cidr: string, ip: string): boolean {
  const c = parseCIDR(cidr);
  const a = parseStrict(ip);
  if (!c || !a || familyOfParsed(a) !== c.family) return false;
  return a.match(parseStrict(c.network)!, c.prefix);
}

/** Whether `ip` lies in any of `cidrs`. */
export function inAnyCIDR(cidrs: readonly string[], ip: string): boolean {
  return cidrs.some((c) => cidrContains(c, ip));
}

/** The members of `list` (addresses or CIDRs) of one family. */
export function ofFamily<T extends string>(list: readonly T[], family: IPFamily): T[] {
  return list.filter((x) => familyOf(x) === family);
}

/**
 * What kind of special address this is, or null for an ordinary unicast address. The API server refuses
 * these as ClusterIPs, externalIPs and endpoint addresses (validation.go: ValidateNonSpecialIP); so does the
 * proxy, since a rule for one of them would reach the node itself (loopback, link-local) or nothing at all.
 */
export function specialAddress(ip: string): string | null {
  const v4 = ipv4Value(ip);
  // The hot path: an IPv4 address outside 0/8, 127/8, 169.254/16 and 224/3 is ordinary.
  const first = v4 >>> 24;
  if (v4 >= 0 && first !== 0 && first !== 127 && first < 224 && !(first === 169 && ((v4 >>> 16) & 255) === 254)) return null;
  const a = parseStrict(ip);
  if (!a) return 'invalid';
  const range = a.range();
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) return 'an IPv4-mapped IPv6 address';
  const names: Record<string, string> = {
    unspecified: 'the unspecified address',
    loopback: 'a loopback address',
    linkLocal: 'a link-local address',
    multicast: 'a multicast address',
    broadcast: 'the broadcast address',
  };
  return names[range] ?? null;
}

/** "ip:port", or "[ip]:port" for IPv6: an endpoint's identity and DNAT destination. */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Splits "ip:port" or "[ipv6]:port"; null when it is not one. */
export function parseHostPort(s: string): { ip: IP; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s);
  const ip = m ? parseIP(m[1] ?? m[2]) : null;
  const port = m ? Number(m[3]) : NaN;
  if (!ip || !isValidPort(port) || (ip.family === 'IPv6') !== (m![1] !== undefined)) return null;
  return { ip, port };
}

export function isValidPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export function isProtocol(p: unknown): p is Protocol {
  return typeof p === 'string' && (PROTOCOLS as readonly string[]).includes(p);
}

// ---------------------------------------------------------------------------------------------------
// The one rule for values that reach rule text. The model only lets valid values through; the modes
// check again with these before writing a value into a rule, so that nothing malformed or
// user-controlled can change a rule's meaning. A failure throws InvalidValueError and the caller leaves
// the whole service port out (never half of it).

/** A value that must not be written into a rule. */
export class InvalidValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidValueError';
  }
}

/** The canonical address if `ip` is a valid address of `family`; else InvalidValueError. */
export function ruleIP(ip: string, family: IPFamily): string {
  const a = parseIP(ip);
  if (!a || a.family !== family) throw new InvalidValueError(`not an ${family} address: ${JSON.stringify(ip)}`);
  return a.ip;
}

/** The canonical CIDR if `cidr` is a valid CIDR of `family`; else InvalidValueError. */
export function ruleCIDR(cidr: string, family: IPFamily): string {
  const c = parseCIDR(cidr);
  if (!c || c.family !== family) throw new InvalidValueError(`not an ${family} CIDR: ${JSON.stringify(cidr)}`);
  return c.cidr;
}

/** A port 1-65535 as text; else InvalidValueError. */
/**
 * An interface name (or name prefix) written into a rule (`-i NAME`, `iifname "NAME"`), as the kernel's
 * dev_valid_name accepts it: 1 to IFNAMSIZ-1 (15) bytes, not "." or "..", no '/', ':' or whitespace. Stricter
 * where rule text needs it: printable ASCII only, no quotes or backslashes, and no '+' or '*' (iptables' and
 * nft's wildcards). `room` bytes are kept free for a wildcard the caller appends (a prefix: 1).
 */
export function ruleInterfaceName(name: string, room = 0): string {
  const max = 15 - room;
  if (typeof name !== 'string' || name.length === 0 || name.length > max || name === '.' || name === '..' || !/^[!#-&(-),-.0-9;-[\]-~]+$/.test(name))
    throw new InvalidValueError(
      `not an interface name${room > 0 ? ' prefix' : ''} (1-${max} printable characters without / : + * quotes, backslashes or spaces): ${JSON.stringify(name)}`,
    );
  return name;
}

export function rulePort(port: number): string {
  if (!isValidPort(port)) throw new InvalidValueError(`not a port: ${String(port)}`);
  return String(port);
}

/** The lower-case protocol name ("tcp", "udp", "sctp") used by iptables, nft and conntrack; else InvalidValueError. */
export function ruleProtocol(p: Protocol): string {
  if (!isProtocol(p)) throw new InvalidValueError(`not a protocol: ${JSON.stringify(p)}`);
  return p.toLowerCase();
}

/** The address if valid for `family`, else null: for callers that skip a bad value instead of failing. */
export function familyAddress(ip: string, family: IPFamily): string | null {
  const a = parseIP(ip);
  return a && a.family === family ? a.ip : null;
}

/** The CIDR if valid for `family`, else null. */
export function familyCIDR(cidr: string, family: IPFamily): string | null {
  const c = parseCIDR(cidr);
  return c && c.family === family ? c.cidr : null;
}

/** The IPv4 address of a 32-bit number (for tools that lay out address ranges). */
export function formatIPv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** An address as a bigint (for interval arithmetic on CIDRs). */
export function addressBits(ip: string): bigint {
  const a = parseStrict(ip);
  if (!a) throw new InvalidValueError(`not an address: ${JSON.stringify(ip)}`);
  return a.toByteArray().reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
}

/** Strips the IPv4-mapped IPv6 prefix Node reports for IPv4 peers of dual-stack sockets. */
export function plainAddress(address: string | undefined): string {
  if (!address) return '';
  const bare = address.split('%')[0]!;
  if (bare.toLowerCase().startsWith('::ffff:') && parseIP(bare.slice(7))?.family === 'IPv4') return bare.slice(7);
  return parseIP(bare)?.ip ?? bare;
}
