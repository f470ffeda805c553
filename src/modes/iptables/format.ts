// The iptables-specific parts of rule text: comments, statistic probabilities and affinity seconds.
// Addresses, CIDRs, ports and protocols go through the one rule of src/model/addr.ts (ruleIP, ruleCIDR,
// rulePort, ruleProtocol); like those, these formatters throw InvalidValueError rather than write
// something that could change the meaning of a rule line (an unbalanced quote would swallow the rest of
// the line, a space would add arguments).
import { InvalidValueError } from '../../model/addr.ts';

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

/** statistic --probability for the i-th of n remaining endpoints: 1/n with kube-proxy's 10 decimals. */
export function fmtProbability(remaining: number): string {
  if (!Number.isInteger(remaining) || remaining < 1) throw new InvalidValueError(`bad endpoint count ${remaining}`);
  return (1 / remaining).toFixed(10);
}

/** A session-affinity timeout in seconds (the API allows 1 to 86400). */
export function fmtSeconds(s: number): string {
  if (!Number.isInteger(s) || s < 1 || s > 86400) throw new InvalidValueError(`bad affinity timeout ${String(s)}`);
  return String(s);
}
