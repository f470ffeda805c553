// Kubernetes Events about this node, as upstream kube-proxy records them (events.k8s.io/v1, reporting
// controller "kube-proxy", regarding the Node): `Starting` when it starts, `FailedToStartProxierHealthcheck` /
// `FailedToStartMetricServer` when a server cannot be bound. Best effort, as upstream's broadcaster: a failed
// post is logged, never retried, never in the way of the proxy.
import type { KubeConfig } from '@kubernetes/client-node';
import { log } from '../log.ts';
import type { ApiClient } from './api-client.ts';

export type EventType = 'Normal' | 'Warning';

/** metav1.MicroTime as the API server writes it: RFC 3339 with microseconds. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** The Event object upstream's recorder posts (Name: `<node>.<unix nanoseconds, hex>`). */
export function nodeEvent(node: string, type: EventType, reason: string, action: string, note: string, nowMs = Date.now()): Record<string, unknown> {
  return {
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: { name: `${node}.${(BigInt(Math.round(nowMs)) * 1_000_000n).toString(16)}`, namespace: 'default' },
    eventTime: microTime(nowMs),
    reportingController: 'kube-proxy',
    reportingInstance: `kube-proxy-${node}`,
    action,
    reason,
    // upstream's NodeRef: the node's name stands for its UID.
    regarding: { kind: 'Node', name: node, uid: node, apiVersion: 'v1' },
    note,
    type,
  };
}

export class EventRecorder {
  readonly #kc: KubeConfig;
  readonly #node: string;
  readonly #client: ApiClient | null;

  constructor(kc: KubeConfig, node: string, client: ApiClient | null = null) {
    this.#kc = kc;
    this.#node = node;
    this.#client = client;
  }

  /** Posts an Event regarding this node; resolves whether the API server took it. */
  async record(type: EventType, reason: string, action: string, note = ''): Promise<boolean> {
    const cluster = this.#kc.getCurrentCluster();
    if (!cluster) return false;
    const { HttpMethod, IsomorphicFetchHttpLibrary, RequestContext } = await import('@kubernetes/client-node');
    const url = new URL(`${cluster.server.replace(/\/+$/, '')}/apis/events.k8s.io/v1/namespaces/default/events`);
    const body = JSON.stringify(nodeEvent(this.#node, type, reason, action, note));
    const ctx = new RequestContext(url.toString(), HttpMethod.POST);
    ctx.setHeaderParam('Content-Type', 'application/json');
    ctx.setHeaderParam('Accept', 'application/json');
    ctx.setBody(body);
    ctx.setSignal(AbortSignal.timeout(10_000));
    const started = performance.now();
    let code = '<error>';
    try {
      if (this.#client) {
        const waited = await this.#client.limiter.take();
        this.#client.observer?.rateLimited('POST', url.host, waited / 1000);
      }
      await this.#kc.applySecurityAuthentication(ctx);
      const resp = await new IsomorphicFetchHttpLibrary().send(ctx).toPromise();
      code = String(resp.httpStatusCode);
      const text = await resp.body.text();
      if (resp.httpStatusCode >= 300) throw new Error(`HTTP ${resp.httpStatusCode}: ${text.slice(0, 200)}`);
      return true;
    } catch (e) {
      log.debug({ event: 'event-not-recorded', reason, err: (e as Error).message }, 'could not record a Kubernetes Event');
      return false;
    } finally {
      this.#client?.observer?.request({ verb: 'POST', host: url.host, code, seconds: (performance.now() - started) / 1000, responseBytes: null });
    }
  }
}
