// This proxy's version (package.json), for --version, the build-info metric and the Starting log line.
import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** `--version` (upstream prints "Kubernetes vX.Y.Z"); `--version=raw` the fields as JSON, as upstream's verflag. */
export function versionText(kind: string): string {
  if (kind === 'raw') {
    return `${JSON.stringify({ gitVersion: `v${VERSION}`, compiler: 'node', nodeVersion: process.version, platform: `${process.platform}/${process.arch}` }, null, 2)}\n`;
  }
  return `kube-proxy-ts v${VERSION}\n`;
}
