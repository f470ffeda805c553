// EndpointSlice changes for the benchmarks that run the proxy against the test API server: each change
// replaces one synthetic service's slice (its endpoints' port flips, so every endpoint changes) and carries
// endpoints.kubernetes.io/last-change-trigger-time = the moment it is handed to the API server, which the
// proxy turns into its network programming latency (as upstream's EndpointSlice controller and kube-proxy do).
import { TRIGGER_TIME_ANNOTATION } from '../src/model/k8s.ts';
import type { ApiServerProcess } from '../test/apiserver/process.ts';
import { makeSlice } from './synthetic.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class SliceChanger {
  private readonly api: ApiServerProcess;
  private readonly endpoints: number;
  private generation = 1;
  /** Changes sent so far. */
  sent = 0;

  constructor(api: ApiServerProcess, endpointsPerService: number) {
    this.api = api;
    this.endpoints = endpointsPerService;
  }

  /** Changes the slice of synthetic service i now; returns the trigger time it carries (ms since the epoch). */
  change(i: number): number {
    const slice = makeSlice(i, this.endpoints, this.generation++);
    const now = Date.now();
    slice.metadata!.annotations = { [TRIGGER_TIME_ANNOTATION]: new Date(now).toISOString() };
    this.api.apply(slice);
    this.sent++;
    return now;
  }

  /**
   * `rate` changes per second for `seconds`, to services 0, 1, 2, ... (mod services), on schedule: a change late
   * because the machine was busy is sent as soon as possible, so the average rate holds. `until` may end it early.
   */
  async churn(rate: number, seconds: number, services: number, until: () => boolean = () => false): Promise<number> {
    const start = performance.now();
    let n = 0;
    while (performance.now() - start < seconds * 1000 && !until()) {
      const due = Math.floor(((performance.now() - start) / 1000) * rate);
      while (n < due) this.change(n++ % services);
      await sleep(10);
    }
    return n;
  }
}
