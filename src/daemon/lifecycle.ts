// Upstream kube-proxy exits, to be restarted by its DaemonSet, when something it only reads at start changes:
// its --config file, its Node's IPs, its Node itself (deleted). Here the same, through one door: the process
// stops as on SIGTERM (its rules stay in place) and exits with status 1.
import { log } from '../log.ts';

let reason: string | null = null;

/** Asks the running proxy to stop and the process to exit 1; the first reason wins. */
export function requestRestart(why: string, fields: Record<string, unknown> = {}): void {
  if (reason !== null) return;
  reason = why;
  log.warn({ event: 'restart', reason: why, ...fields }, `${why}: exiting so that the proxy restarts with it`);
  // The daemon's stop path is its SIGTERM handler: take it, so that the stop is the same as a pod's.
  process.kill(process.pid, 'SIGTERM');
}

/** Why a restart was requested, or null. */
export function restartReason(): string | null {
  return reason;
}
