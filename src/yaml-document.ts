// One YAML document of the daemon's own (a kubeconfig, a KubeProxyConfiguration), read and written with js-yaml:
// the library the --from reader needs anyway (watch/file.ts), so a daemon loads one YAML library, not two. The
// `yaml` package, loaded for these two files alone, is 72 modules: without it the daemon's first sync of an empty
// cluster comes 25-40 ms sooner after spawn (225-250 ms against 257-269, alternating runs), 1-3 MB smaller.
//
// The core schema of YAML 1.2, as the `yaml` package read these files before: `yes` and `2001-12-14` stay strings,
// no timestamps, no merge keys.
import { CORE_SCHEMA, dump, load } from 'js-yaml';

/** The one document of `text` (undefined when empty); throws js-yaml's error, its first line saying what and where. */
export function parseYamlDocument(text: string): unknown {
  return load(text, { schema: CORE_SCHEMA });
}

/** `value` as a YAML document, double quotes where a string needs them (as Go's YAML writer quotes). */
export function yamlDocument(value: unknown): string {
  return dump(value, { schema: CORE_SCHEMA, lineWidth: -1, quoteStyle: 'double' });
}
