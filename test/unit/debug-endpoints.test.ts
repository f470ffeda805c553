// The running proxy's debug endpoints (src/daemon/debug.ts), answered from the pipelines' snapshots.
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FamilyView, handleDebug } from '../../src/daemon/debug.ts';
import { boundedServer, listen } from '../../src/daemon/http.ts';
import { buildStates } from '../../src/model/store.ts';
import { stateToJSON } from '../../src/model/view.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

const objects = [
  svc('web', { clusterIP: '198.18.100.10', clusterIPs: ['198.18.100.10', '2001:2:0:100::10'], ports: [{ name: 'http', port: 80 }] }),
  slice('web-1', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.11', 'node-a'), ep('198.19.2.11', 'node-b')]),
  { ...slice('web-2', 'web', [{ name: 'http', port: 8080 }], [ep('2001:2:0:11::11', 'node-a')]), addressType: 'IPv6' },
];
const { states } = buildStates(objects, CONFIG);
const views: FamilyView[] = states.map((state) => ({
  family: state.family,
  current: () => state,
  applied: () => state,
  lastSync: () => ({ at: new Date('2026-12-04T06:00:00Z'), outcome: 'ok' }),
  render: (s) => `# rules of ${s.family}: ${[...s.servicePorts.keys()].join(',')}\n`,
  drift: () => (state.family === 'IPv4' ? ['nat: KUBE-SERVICES has 1 rule, 2 applied'] : []),
}));

let port = 0;
const server = boundedServer('debug-test', (req, res) => {
  if (!handleDebug(req, res, { families: views, combine: null })) res.writeHead(404).end();
});
beforeAll(async () => {
  await listen(server, '127.0.0.1', 0, 'debug-test');
  port = (server.address() as AddressInfo).port;
});
afterAll(() => {
  server.close();
});

function get(path: string): Promise<{ code: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body, headers: res.headers }));
    })
      .on('error', reject)
      .end();
  });
}

describe('debug endpoints', () => {
  it('/debug/state is exactly state -o json for both families', async () => {
    const r = await get('/debug/state');
    expect(r.code).toBe(200);
    expect(r.body).toBe(stateToJSON(states));
  });
  it('/debug/rules prints what --dry-run prints for the applied state, per family, with the last sync in headers', async () => {
    const v4 = await get('/debug/rules');
    expect(v4.body).toBe('# rules of IPv4: shop/web:http\n');
    expect(v4.headers['x-last-sync-ipv4']).toBe('2026-12-04T06:00:00.000Z ok');
    const v6 = await get('/debug/rules?family=IPv6');
    expect(v6.body).toBe('# rules of IPv6: shop/web:http\n');
    expect((await get('/debug/rules?family=IPv5')).code).toBe(400);
  });
  it('/debug/explain answers from the live state, IPv4 and IPv6', async () => {
    const r = JSON.parse((await get('/debug/explain?to=198.18.100.10:80&src=198.19.1.50')).body);
    expect(r.servicePort).toBe('shop/web:http');
    expect(r.endpoints.map((e: { id: string }) => e.id).sort()).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
    const r6 = JSON.parse((await get('/debug/explain?to=[2001:2:0:100::10]:80')).body);
    expect(r6.endpoints.map((e: { id: string }) => e.id)).toEqual(['[2001:2:0:11::11]:8080']);
    expect((await get('/debug/explain?to=nonsense')).code).toBe(400);
    expect((await get('/debug/explain?to=198.18.100.10:80&src=2001:2::1')).code).toBe(400);
  });
  it('/debug/drift reports what the periodic checks found', async () => {
    const r = JSON.parse((await get('/debug/drift')).body);
    expect(r).toEqual({ IPv4: { checked: true, differences: ['nat: KUBE-SERVICES has 1 rule, 2 applied'] }, IPv6: { checked: true, differences: [] } });
  });
});
