// README's first command: the sandbox demo works in every mode and leaves nothing behind.
import { describe, expect, it } from 'vitest';
import { run } from '../../src/exec.ts';
import { BIN } from '../../src/lab/sandbox/proxy.ts';
import { listNamespaces } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

describe('kube-proxy-ts demo', () => {
  for (const mode of ['iptables', 'nftables', 'userspace']) {
    it(`runs in ${mode} mode: every probe answered as expected, namespaces removed`, async () => {
      const r = await run([process.execPath, '--disable-warning=ExperimentalWarning', BIN, 'demo', '--mode', mode], { timeoutMs: 90_000 });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`mode ${mode}`);
      expect(r.stdout).toMatch(/^shop\/web:http\s+80\/TCP\s+198\.18\.100\.10\s+30080/m);
      expect(r.stdout).toMatch(/^pod:shell\s+198\.18\.100\.10:80\/tcp\s+.*web-a×\d+.*ok$/m);
      expect(r.stdout).toContain('Every probe answered as expected. The network namespaces are gone.');
      const prefix = /Network built \(prefix (kpt\w+)\)/.exec(r.stdout)?.[1];
      expect(prefix).toBeTruthy();
      expect((await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
    });
  }
});
