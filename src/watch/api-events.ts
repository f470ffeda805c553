// Kubernetes Events about this node, as upstream kube-proxy records them (events.k8s.io/v1, reporting
// controller "kube-proxy", regarding the Node): `Starting` when it starts, `FailedToStartProxierHealthcheck` /
// `FailedToStartMetricServer` when a server cannot be bound. Best effort, as upstream's broadcaster: a failed
// post is logged, never retried, never in the way of the proxy.
import { log } from '../log.ts';
import { type ApiClient, ApiStatusError, readText, statusMessage } from './api-client.ts';

/** How long one post may take (upstream's broadcaster gives up similarly: Events are best effort). */
const POST_TIMEOUT_MS = 10_000;

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
  readonly #client: ApiClient;
  readonly #node: string;

  constructor(client: ApiClient, node: string) {
    this.#client = client;
    this.#node = node;
  }

  /** Posts an Event regarding this node; resolves whether the API server took it. */
  async record(type: EventType, reason: string, action: string, note = ''): Promise<boolean> {
    const body = JSON.stringify(nodeEvent(this.#node, type, reason, action, note));
    try {
      await this.#client.request(
        { method: 'POST', path: '/apis/events.k8s.io/v1/namespaces/default/events', body, signal: AbortSignal.timeout(POST_TIMEOUT_MS) },
        async (res) => {
          const text = await readText(res);
          const status = res.statusCode ?? 0;
          if (status >= 300) throw new ApiStatusError(status, statusMessage(status, text));
          return { value: undefined, bytes: Buffer.byteLength(text) };
        },
      );
      return true;
    } catch (e) {
      log.debug({ event: 'event-not-recorded', reason, err: (e as Error).message }, 'could not record a Kubernetes Event');
      return false;
    }
  }
}
