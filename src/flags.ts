// Command-line parsing with pflag's rules (what kube-proxy uses), so that any valid kube-proxy command line
// parses the same way here: `--flag value`, `--flag=value`, `-v=2`, `-v 2`, `-v2`, booleans only as `--flag` or
// `--flag=true|false`, `_` and `-` interchangeable in names (kube-proxy's WordSepNormalizeFunc), list flags
// (stringSlice, mapStringBool) accumulating over repeats, `--` ending the flags. And Go's value syntax for
// durations, integers, floats and booleans, with the same ranges.
import { UsageError } from './errors.ts';

export { UsageError };

/**
 * 'bool': `--x` or `--x=true|false`; 'string': the last value wins; 'list': comma-separated, repeats append
 * (pflag's stringSlice and mapStringBool).
 */
export type FlagKind = 'bool' | 'string' | 'list';

export interface FlagSpec {
  name: string;
  /** Other names (a one-letter alias is a shorthand: `-v`). */
  aliases?: string[];
  kind: FlagKind;
  /** The value's placeholder in --help. */
  arg?: string;
  help: string;
  /** The default as --help shows it. */
  default?: string;
}

/** Flags as given: the canonical name with its value (lists comma-joined in order), and the order they came in. */
export interface ParsedFlags {
  values: Map<string, string>;
  /** Canonical names in the order first given. */
  given: string[];
}

/** kube-proxy's cliflag.WordSepNormalizeFunc: `log_dir` and `log-dir` are one flag. */
const normalize = (name: string): string => name.replaceAll('_', '-');

export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): ParsedFlags {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) for (const n of [s.name, ...(s.aliases ?? [])]) byName.set(normalize(n), s);
  const out: ParsedFlags = { values: new Map(), given: [] };
  const set = (spec: FlagSpec, value: string) => {
    const prev = out.values.get(spec.name);
    if (prev === undefined) out.given.push(spec.name);
    out.values.set(spec.name, spec.kind === 'list' && prev !== undefined && prev !== '' ? `${prev},${value}` : value);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      if (i + 1 < argv.length) throw new UsageError(`unexpected argument ${JSON.stringify(argv[i + 1])}`);
      break;
    }
    const long = /^--([a-zA-Z0-9][-_a-zA-Z0-9.]*)(?:=(.*))?$/s.exec(arg);
    // One dash: a shorthand (`-v=2`, `-v 2`, `-v2`), or a long name given with one dash (Go's flag package style).
    const short = long ? null : /^-([a-zA-Z0-9][-_a-zA-Z0-9.]*)(?:=(.*))?$/s.exec(arg);
    const m = long ?? short;
    if (!m) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const name = m[1]!;
    let inline = m[2];
    let spec = byName.get(normalize(name));
    if (!spec && short && inline === undefined && byName.get(name[0]!)?.aliases?.includes(name[0]!)) {
      // `-v2`: a one-letter shorthand with its value attached.
      spec = byName.get(name[0]!)!;
      inline = name.slice(1);
    }
    if (!spec) throw new UsageError(`unknown flag ${arg.split('=')[0]}`);
    if (spec.kind === 'bool') {
      set(spec, String(parseBool(inline ?? 'true', `--${spec.name}`)));
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new UsageError(`--${spec.name} needs a value`);
    set(spec, v);
  }
  return out;
}

export function flagsHelp(specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    // Shorthands first (`-v`), then the flag and its long aliases (`--v`, `--proxy-mode`, `--mode`).
    const short = (s.aliases ?? []).filter((a) => a.length === 1).map((a) => `-${a}`);
    const long = [s.name, ...(s.aliases ?? []).filter((a) => a.length > 1)].map((n) => `--${n}`);
    const names = [...short, ...long].join(', ');
    const help = s.default !== undefined ? `${s.help} (default ${s.default})` : s.help;
    return [`${names}${s.arg ? ` ${s.arg}` : ''}`, help] as const;
  });
  const w = Math.min(48, Math.max(...rows.map((r) => r[0].length)));
  return rows.map(([a, h]) => (a.length > w ? `  ${a}\n  ${''.padEnd(w)}  ${h}` : `  ${a.padEnd(w)}  ${h}`)).join('\n');
}

/** Go's strconv.ParseBool. */
export function parseBool(s: string, what: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(s)) return false;
  throw new UsageError(`${what}: ${JSON.stringify(s)} is not true or false`);
}

const DURATION_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go's time.ParseDuration ("1s", "500ms", "1m30s", "-2h", "0"), in milliseconds. */
export function parseDuration(s: string, what: string): number {
  const sign = s.startsWith('-') ? -1 : 1;
  const body = s.replace(/^[-+]/, '');
  if (body === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(body)) !== null) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (body === '' || pos !== body.length) throw new UsageError(`${what}: ${JSON.stringify(s)} is not a duration (like 1s, 500ms, 1m30s)`);
  return sign * total;
}

/** A Go duration as Go prints it (time.Duration.String): "30s", "1m0s", "1h0m0s", "250ms", "0s". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${rest}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = `${rest / 1000}s`;
  if (h > 0) return `${sign}${h}h${m}m${s}`;
  if (m > 0) return `${sign}${m}m${s}`;
  return `${sign}${s}`;
}

/** A Go int32 flag (decimal, 0x hex, 0o octal, as strconv.ParseInt with base 0), within [min, max] when given. */
export function parseInt32(s: string, what: string, range?: { min: number; max: number }): number {
  const m = /^([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[0-7]+|[1-9][0-9]*|0)$/.exec(s.trim());
  // Go's base 0: a leading 0 alone means octal too.
  const digits = m ? (/^0[0-7]+$/.test(m[2]!) ? `0o${m[2]!.slice(1)}` : m[2]!) : '';
  const n = m ? (m[1] === '-' ? -1 : 1) * Number(digits) : Number.NaN;
  if (!Number.isInteger(n) || n < -(2 ** 31) || n >= 2 ** 31) throw new UsageError(`${what}: ${JSON.stringify(s)} is not an integer`);
  if (range && (n < range.min || n > range.max)) throw new UsageError(`${what}: ${n} must be within [${range.min}, ${range.max}]`);
  return n;
}

/** A Go float32 flag. */
export function parseFloat32(s: string, what: string): number {
  const n = s.trim() === '' ? Number.NaN : Number(s);
  if (!Number.isFinite(n)) throw new UsageError(`${what}: ${JSON.stringify(s)} is not a number`);
  return n;
}

/** pflag's mapStringBool: "A=true,B=false". */
export function parseBoolMap(s: string, what: string): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const pair of s.split(',').map((p) => p.trim())) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`${what}: missing bool value for ${JSON.stringify(pair)}`);
    out[pair.slice(0, eq).trim()] = parseBool(pair.slice(eq + 1).trim(), `${what} ${pair.slice(0, eq)}`);
  }
  return out;
}
