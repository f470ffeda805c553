// The node settings upstream kube-proxy applies at start (conntrack sysctls, hashsize, oom_score_adj), against a
// fake /proc and /sys: what is written, in which units, only when it differs, and what a read-only
// nf_conntrack_max (any network namespace but the first) leaves alone.
import { describe, expect, it } from 'vitest';
import { HASHSIZE, type SettingsIO, applyNodeSettings, conntrackMax, conntrackSysctls } from '../../src/daemon/node-setup.ts';

const DEFAULTS = {
  maxPerCore: 32768,
  min: 131072,
  tcpEstablishedTimeout: 86_400_000,
  tcpCloseWaitTimeout: 3_600_000,
  tcpBeLiberal: false,
  udpTimeout: 0,
  udpStreamTimeout: 0,
};
const NF = '/proc/sys/net/netfilter';

/** A fake filesystem: paths with values; read-only paths refuse writes as /proc does. */
function fakeIO(files: Record<string, string>, readOnly: string[] = []): SettingsIO & { writes: string[] } {
  const writes: string[] = [];
  return {
    writes,
    read: async (path) => {
      if (!(path in files)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return files[path]!;
    },
    write: async (path, value) => {
      if (readOnly.includes(path) || !(path in files)) throw Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES' });
      files[path] = value;
      writes.push(`${path}=${value.trim()}`);
    },
  };
}

describe('node settings', () => {
  it("computes upstream's nf_conntrack_max: maxPerCore x CPUs, at least min, 0 leaves it", () => {
    expect(conntrackMax(DEFAULTS, 2)).toBe(131072);
    expect(conntrackMax(DEFAULTS, 8)).toBe(262144);
    expect(conntrackMax({ ...DEFAULTS, maxPerCore: 0 }, 8)).toBe(0);
    expect(conntrackSysctls({ ...DEFAULTS, maxPerCore: 0, tcpBeLiberal: true, udpTimeout: 30_000, udpStreamTimeout: 120_000 }, 2)).toEqual([
      { name: 'nf_conntrack_tcp_timeout_established', value: 86400 },
      { name: 'nf_conntrack_tcp_timeout_close_wait', value: 3600 },
      { name: 'nf_conntrack_tcp_be_liberal', value: 1 },
      { name: 'nf_conntrack_udp_timeout', value: 30 },
      { name: 'nf_conntrack_udp_timeout_stream', value: 120 },
    ]);
  });

  it('writes what differs, raises hashsize to max/4, and sets oom_score_adj', async () => {
    const io = fakeIO({
      [`${NF}/nf_conntrack_max`]: '65536\n',
      [`${NF}/nf_conntrack_tcp_timeout_established`]: '432000\n',
      [`${NF}/nf_conntrack_tcp_timeout_close_wait`]: '3600\n',
      [HASHSIZE]: '16384\n',
      '/proc/self/oom_score_adj': '0\n',
    });
    const results = await applyNodeSettings({ conntrack: DEFAULTS, oomScoreAdj: -999 }, io, 4);
    expect(io.writes).toEqual([
      `${NF}/nf_conntrack_max=131072`,
      `${HASHSIZE}=32768`,
      `${NF}/nf_conntrack_tcp_timeout_established=86400`,
      '/proc/self/oom_score_adj=-999',
    ]);
    expect(results.find((r) => r.path.endsWith('close_wait'))?.outcome).toBe('unchanged');
  });

  it('leaves a read-only nf_conntrack_max (and so the global hashsize) alone and goes on with the timeouts', async () => {
    const io = fakeIO(
      {
        [`${NF}/nf_conntrack_max`]: '262144\n',
        [`${NF}/nf_conntrack_tcp_timeout_established`]: '432000\n',
        [`${NF}/nf_conntrack_tcp_timeout_close_wait`]: '60\n',
        [HASHSIZE]: '1024\n',
        '/proc/self/oom_score_adj': '0\n',
      },
      [`${NF}/nf_conntrack_max`],
    );
    const results = await applyNodeSettings({ conntrack: DEFAULTS, oomScoreAdj: -999 }, io, 2);
    expect(results[0]).toMatchObject({ path: `${NF}/nf_conntrack_max`, outcome: 'failed' });
    expect(io.writes).toEqual([
      `${NF}/nf_conntrack_tcp_timeout_established=86400`,
      `${NF}/nf_conntrack_tcp_timeout_close_wait=3600`,
      '/proc/self/oom_score_adj=-999',
    ]);
  });
});
