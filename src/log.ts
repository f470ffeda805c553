// JSON logs (pino) on stdout. One logger for the whole process; the level comes from --v / --log-level.
import { pino } from 'pino';

export const log = pino({
  base: undefined,
  level: process.env.KUBE_PROXY_TS_LOG_LEVEL ?? 'info',
  timestamp: pino.stdTimeFunctions.isoTime,
});

export type Logger = typeof log;

export function setLogLevel(level: string): void {
  log.level = level;
}
