// Which iptables backend the host uses, decided as kube-proxy's image wrapper (iptables-wrapper)
// does: whichever of iptables-legacy-save / iptables-nft-save (IPv4 and IPv6) already holds rules,
// with KUBE-* lines (kubelet's and kube-proxy's chains and rules) weighing most; nft when neither
// holds any. Mixing the two would leave two independent rule sets that both see every packet.
import { run } from '../../exec.ts';
import { log } from '../../log.ts';
import type { IptablesBackend } from '../types.ts';
import type { Backend } from './restore.ts';

export interface SaveScore {
  /** Lines that mention a KUBE-* chain: rules, and chain declarations such as KUBE-IPTABLES-HINT. */
  kube: number;
  /** Rule lines. */
  rules: number;
}

/** Counts what an iptables-save output holds. */
export function scoreSave(text: string): SaveScore {
  let kube = 0;
  let rules = 0;
  // Scanned in place: the nat table of a big cluster is tens of megabytes.
  for (let pos = 0; pos < text.length;) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    if (text.charCodeAt(pos) === 45 /* - */) {
      rules++;
      if (text.slice(pos, nl).includes('KUBE-')) kube++;
    } else if (text.startsWith(':KUBE-', pos)) {
      kube++;
    }
    pos = nl + 1;
  }
  return { kube, rules };
}

/** KUBE-* lines decide; then rule counts; a tie (nothing anywhere, typically) means nft. */
export function pickBackend(legacy: SaveScore, nft: SaveScore): Backend {
  if (legacy.kube !== nft.kube) return legacy.kube > nft.kube ? 'legacy' : 'nft';
  return legacy.rules > nft.rules ? 'legacy' : 'nft';
}

export interface DetectOptions {
  /** Look inside this network namespace (tests). */
  netns?: string;
}

/** iptables-save and ip6tables-save output of one backend; a missing or failing binary counts as empty. */
async function saveAll(backend: Backend, opts: DetectOptions): Promise<string> {
  const prefix = opts.netns ? ['ip', 'netns', 'exec', opts.netns] : [];
  const outs = await Promise.all(
    ['iptables', 'ip6tables'].map(async (base) => {
      try {
        // iptables-nft-save has been known to loop on odd rule sets: bound it, as the wrapper does.
        const r = await run([...prefix, `${base}-${backend}-save`], { timeoutMs: 5_000 });
        return r.code === 0 ? r.stdout : '';
      } catch {
        return '';
      }
    }),
  );
  return outs.join('\n');
}

/** Detects the backend the host's rules live in. */
export async function detectBackend(opts: DetectOptions = {}): Promise<Backend> {
  const [legacy, nft] = await Promise.all([saveAll('legacy', opts), saveAll('nft', opts)]);
  const ls = scoreSave(legacy);
  const ns = scoreSave(nft);
  const backend = pickBackend(ls, ns);
  log.info({ event: 'iptables-backend', backend, legacy: ls, nft: ns }, `using the iptables ${backend} backend`);
  return backend;
}

/** The backend to use: the forced one, or the detected one for 'auto'. */
export async function resolveBackend(choice: IptablesBackend, opts: DetectOptions = {}): Promise<Backend> {
  return choice === 'auto' ? detectBackend(opts) : choice;
}
