// Sources feed the model: an initial list, then add/update/delete events. The file source and the API
// source both implement this.
import type { KubeObject } from '../model/k8s.ts';

export type SourceEvent = { type: 'add' | 'update' | 'delete'; object: KubeObject };

export interface SourceHandler {
  /** The complete set of objects (initial list, or a relist after which anything not listed is gone). */
  onList(objects: KubeObject[]): void;
  /** One change after the list. */
  onEvent(event: SourceEvent): void;
  /** A problem the source recovers from by itself (reported, not fatal). */
  onError?(err: Error): void;
}

export interface Source {
  /** Delivers the initial list before resolving, then keeps delivering events until stop(). */
  start(handler: SourceHandler): Promise<void>;
  stop(): Promise<void>;
}
