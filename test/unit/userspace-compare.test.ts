// The pure parts of `kube-proxy-ts compare`: statistics, goals, the table and the docs section.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { syntheticCluster } from '../../src/lab/compare/cluster.ts';
import { goalsOf, median, renderTable, syncDurations, writeSection } from '../../src/lab/compare/index.ts';
import type { ModeFigures } from '../../src/lab/compare/index.ts';
import { percentile } from '../../src/lab/compare/traffic.ts';

const figures = (bulkUs: number | null, rateUs: number | null): ModeFigures[] => [
  {
    mode: 'iptables',
    bulkBitsPerSecond: 10e9,
    connectionsPerSecond: 10_000,
    latencyP50Ms: 0.1,
    latencyP99Ms: 1,
    syncMs: 26_000,
    connectionErrors: 0,
    errors: [],
  },
  {
    mode: 'userspace',
    bulkBitsPerSecond: bulkUs,
    connectionsPerSecond: rateUs,
    latencyP50Ms: 0.3,
    latencyP99Ms: 2,
    syncMs: 400,
    connectionErrors: 2,
    errors: bulkUs === null ? ['setup: boom'] : [],
  },
];

describe('statistics', () => {
  it('takes medians and nearest-rank percentiles', () => {
    expect(median([])).toBeNull();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('reads the sync durations the proxy logs, skipping other and cut lines', () => {
    const out = [
      '{"level":30,"event":"starting"}',
      '{"level":30,"event":"synced","durationMs":412.5}',
      '"event":"synced","durationMs":9',
      '{"event":"synced","durationMs":3}',
    ].join('\n');
    expect(syncDurations(out)).toEqual([412.5, 3]);
  });
});

describe('goals and table', () => {
  it('checks userspace against iptables: >= 0.6 x bulk throughput, >= 0.5 x connection rate', () => {
    expect(goalsOf(figures(6e9, 5000)).map((g) => [g.ratio, g.met])).toEqual([
      [0.6, true],
      [0.5, true],
    ]);
    expect(goalsOf(figures(5.9e9, 4999)).map((g) => g.met)).toEqual([false, false]);
    expect(goalsOf(figures(null, null)).map((g) => [g.ratio, g.met])).toEqual([
      [null, false],
      [null, false],
    ]);
  });

  it('renders one row per figure, the ratios, the goals and the errors', () => {
    const f = figures(4e9, 6000);
    const table = renderTable(f, goalsOf(f), { rounds: 5, seconds: 2, concurrency: 32, syncServices: 2000, syncEndpoints: 10 });
    const lines = table.split('\n');
    expect(lines[0]).toBe('| figure | iptables | userspace | userspace / iptables |');
    expect(lines).toContain('| bulk throughput, one TCP stream, Gbit/s (2 s) | 10.00 | 4.00 | 0.40 (goal >= 0.6: NOT met) |');
    expect(lines).toContain('| short connections per second (32 clients, 2 s) | 10000 | 6000 | 0.60 (goal >= 0.5: met) |');
    expect(lines).toContain('| sync from scratch, 2,000 services x 10 endpoints, s | 26.00 | 0.40 | 0.02 |');
    expect(lines).toContain('| failed connections (all rounds) | 0 | 2 | - |');
    const failed = renderTable(figures(null, null), goalsOf(figures(null, null)), {
      rounds: 1,
      seconds: 2,
      concurrency: 32,
      syncServices: 10,
      syncEndpoints: 1,
    });
    expect(failed).toContain('| 10.00 | failed | - |');
    expect(failed).toContain('- userspace: setup: boom');
  });
});

describe('writeSection', () => {
  it('replaces only the compare section, or appends it', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kpt-compare-unit-'));
    try {
      const file = path.join(dir, 'benchmarks.md');
      writeFileSync(file, '# Benchmarks\n\n<!-- model:begin -->\nmodel\n<!-- model:end -->\n');
      writeSection(file, '<!-- compare:begin -->\none\n<!-- compare:end -->');
      writeSection(file, '<!-- compare:begin -->\ntwo\n<!-- compare:end -->');
      expect(readFileSync(file, 'utf8')).toBe(
        '# Benchmarks\n\n<!-- model:begin -->\nmodel\n<!-- model:end -->\n\n<!-- compare:begin -->\ntwo\n<!-- compare:end -->\n',
      );
      const fresh = path.join(dir, 'new.md');
      writeSection(fresh, '<!-- compare:begin -->\nx\n<!-- compare:end -->');
      expect(readFileSync(fresh, 'utf8')).toBe('# Benchmarks\n\n<!-- compare:begin -->\nx\n<!-- compare:end -->\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('syntheticCluster', () => {
  it('makes services with distinct ClusterIPs and endpoints, inside the test ranges', () => {
    const items = syntheticCluster(300, 10) as { kind: string; spec?: { clusterIP: string }; endpoints?: { addresses: string[] }[] }[];
    const services = items.filter((i) => i.kind === 'Service');
    const slices = items.filter((i) => i.kind === 'EndpointSlice');
    expect(services).toHaveLength(300);
    expect(slices).toHaveLength(300);
    const ips = services.map((s) => s.spec?.clusterIP as string);
    expect(new Set(ips).size).toBe(300);
    expect(ips.every((ip) => /^198\.18\.(9[6-9]|10[0-9]|11[01])\.\d+$/.test(ip))).toBe(true);
    const eps = slices.flatMap((s) => (s.endpoints ?? []).map((e) => e.addresses[0] as string));
    expect(new Set(eps).size).toBe(3000);
    expect(eps.every((ip) => ip.startsWith('198.19.'))).toBe(true);
    expect(() => syntheticCluster(5000, 1)).toThrow(/services/);
    expect(() => syntheticCluster(4000, 20)).toThrow(/endpoints/);
  });
});
