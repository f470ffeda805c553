// Strict formatters for every value that reaches iptables-restore text. The model validates its
// input already; these re-check, so that nothing malformed or user-controlled can change the
// meaning of a rule line (an unbalanced quote would swallow the rest of the line, a space would
// add arguments).
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { IPFamily, Protocol } from '../../model/types.ts';

/** A value that must not be written into rule text. */
export class InvalidValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidValueError';
  }
}

const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6_CHARS = /^[0-9a-fA-F:.]+$/;

/** An IP address of the given family, in the canonical text the model produces. */
export function fmtIP(ip: string, family: IPFamily): string {
  if (family === 'IPv4') {
    if (!IPV4.test(ip)) throw new InvalidValueError(`not an IPv4 address: ${JSON.stringify(ip)}`);
    return ip;
  }
  if (!IPV6_CHARS.test(ip) || !isIPv6(ip)) throw new InvalidValueError(`not an IPv6 address: ${JSON.stringify(ip)}`);
  return ip.toLowerCase();
}

/** "a.b.c.d/n" (or an IPv6 prefix) of the given family. */
export function fmtCIDR(cidr: string, family: IPFamily): string {
  const slash = cidr.indexOf('/');
  if (slash < 0) throw new InvalidValueError(`not a CIDR: ${JSON.stringify(cidr)}`);
  const addr = fmtIP(cidr.slice(0, slash), family);
  const bits = cidr.slice(slash + 1);
  const max = family === 'IPv4' ? 32 : 128;
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) throw new InvalidValueError(`bad prefix length in ${JSON.stringify(cidr)}`);
  return `${addr}/${Number(bits)}`;
}

/** The family of an address or CIDR, or null when it is neither. */
export function familyOf(addrOrCIDR: string): IPFamily | null {
  const a = addrOrCIDR.split('/')[0] ?? '';
  if (isIPv4(a)) return 'IPv4';
  if (isIPv6(a)) return 'IPv6';
  return null;
}

/** Whether `ip` lies in `cidr` (false when their families differ). */
export function cidrContains(cidr: string, ip: string): boolean {
  const family = familyOf(cidr);
  if (!family || familyOf(ip) !== family) return false;
  const [addr = '', bits = ''] = cidr.split('/');
  const type = family === 'IPv4' ? 'ipv4' : 'ipv6';
  const list = new BlockList();
  list.addSubnet(addr, Number(bits), type);
  return list.check(ip, type);
}

/** A TCP/UDP/SCTP port, 1-65535. */
export function fmtPort(port: number): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidValueError(`not a port: ${String(port)}`);
  return String(port);
}

const PROTOCOLS: Record<Protocol, string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

/** The iptables protocol name ("tcp", "udp", "sctp"). */
export function fmtProtocol(p: Protocol): string {
  const name = Object.hasOwn(PROTOCOLS, p) ? PROTOCOLS[p] : undefined;
  if (!name) throw new InvalidValueError(`not a protocol: ${JSON.stringify(p)}`);
  return name;
}

/** "ip:port", or "[ip]:port" for IPv6: the DNAT destination and kube-proxy's endpoint string. */
export function fmtHostPort(ip: string, port: number, family: IPFamily): string {
  const a = fmtIP(ip, family);
  return family === 'IPv6' ? `[${a}]:${fmtPort(port)}` : `${a}:${fmtPort(port)}`;
}

/** xt_comment keeps at most 255 bytes. */
const MAX_COMMENT = 255;
/** Characters a comment may carry as they are; anything else becomes "_". No quotes, backslashes or "#". */
const UNSAFE_COMMENT_CHAR = /[^A-Za-z0-9 ._:/>,;=+@()[\]-]/g;

/**
 * Comment text made safe: every character that iptables-restore's tokenizer treats specially
 * (quotes, backslash, "#") or that is not printable ASCII becomes "_". Kubernetes names never
 * contain such characters, so real names pass unchanged.
 */
export function commentSafe(text: string): string {
  return text.replace(UNSAFE_COMMENT_CHAR, '_');
}

/** `--comment` argument for text already made safe: double-quoted, cut to xt_comment's limit. */
export function quoteComment(safe: string): string {
  return `"${safe.length > MAX_COMMENT ? safe.slice(0, MAX_COMMENT) : safe}"`;
}

/** `--comment "<text>"` argument for any text. */
export function fmtComment(text: string): string {
  return quoteComment(commentSafe(text));
}

/** statistic --probability for the i-th of n remaining endpoints: 1/n with kube-proxy's 10 decimals. */
export function fmtProbability(remaining: number): string {
  if (!Number.isInteger(remaining) || remaining < 1) throw new InvalidValueError(`bad endpoint count ${remaining}`);
  return (1 / remaining).toFixed(10);
}

/** A session-affinity timeout in seconds. */
export function fmtSeconds(s: number): string {
  if (!Number.isInteger(s) || s < 1 || s > 86400) throw new InvalidValueError(`bad affinity timeout ${String(s)}`);
  return String(s);
}
