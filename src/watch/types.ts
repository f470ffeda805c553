// Sources feed the model: an initial list, then add/update/delete events. The file source and the API
// source both implement this.
import type { KubeObject, WatchedKind } from '../model/k8s.ts';

export type SourceEvent = { type: 'add' | 'update' | 'delete'; object: KubeObject };

/** A list handed over in parts as it is read: add() per part, in order; end() once the list is complete. */
export interface ListSink {
  add(objects: KubeObject[]): void;
  end(): void;
}

export interface SourceHandler {
  /**
   * The complete set of objects of `kinds` (every kind when absent): an initial list, or a relist after which
   * anything of those kinds not listed is gone. The API source lists each kind on its own (and a kind's events
   * may follow its list before the other kinds have listed); the file source lists everything at once.
   */
  onList(objects: KubeObject[], kinds?: readonly WatchedKind[]): void;
  /**
   * Optional, for the API source: a list of `kind` (initial or relist) in parts as it is read, instead of one
   * onList once it is read, so that no part of it is held until the end. The sink's end() comes only when the
   * list is complete; a list that fails is never ended (what it added is current, what it would have deleted
   * stays until a list completes), and the next list asks for a new sink.
   */
  listing?(kind: WatchedKind): ListSink;
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
