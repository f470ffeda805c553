// deploy/kube-proxy-ts.yaml, checked offline: every document against the Kubernetes OpenAPI schemas that the
// npm package kubernetes-models ships (its validators: types, required fields, formats; its TypeScript types,
// through the compiler's excess-property check: unknown fields), and what it configures taken by the proxy as
// it would be in a pod (the configuration without a single notice, the kubeconfig naming the control-plane
// endpoint with the service-account token file, no cluster DNS).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { type RunOptions, resolveRunOptions } from '../../src/config.ts';
import { readKubeConfig } from '../../src/watch/kubeconfig.ts';

const REPO = join(import.meta.dirname, '../..');
const MANIFEST = join(REPO, 'deploy/kube-proxy-ts.yaml');

type Doc = { apiVersion: string; kind: string; [k: string]: any };
const docs = (text: string): Doc[] => parseAllDocuments(text).map((d) => d.toJS() as Doc);

/** kubernetes-models' module for an apiVersion: `v1` is the core group. */
const modelModule = (apiVersion: string) => `kubernetes-models/${apiVersion}`;

/** Runs kubernetes-models' JSON-schema validator of each document's kind; the messages of the ones that fail. */
async function schemaErrors(list: Doc[]): Promise<string[]> {
  const out: string[] = [];
  for (const [i, d] of list.entries()) {
    const mod = (await import(modelModule(d.apiVersion))) as Record<string, new (data: unknown) => { validate(): void }>;
    const Model = mod[d.kind];
    if (!Model) {
      out.push(`document ${i}: no model for ${d.apiVersion} ${d.kind}`);
      continue;
    }
    try {
      new Model(d).validate();
    } catch (e) {
      out.push(`document ${i} (${d.kind}): ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * Type-checks each document as an object literal of kubernetes-models' interface for its kind (I<Kind>, generated
 * from the OpenAPI schema): the compiler's excess-property check reports every field the schema does not have.
 * The file is virtual, placed in the repository so that `kubernetes-models` resolves from node_modules.
 */
function unknownFields(list: Doc[]): string[] {
  const file = join(REPO, 'test/unit/__deploy_manifest_check__.ts');
  const imports = new Map<string, Set<string>>();
  for (const d of list) {
    const names = imports.get(modelModule(d.apiVersion)) ?? new Set<string>();
    names.add(`I${d.kind}`);
    imports.set(modelModule(d.apiVersion), names);
  }
  const lines = [...imports].map(([mod, names]) => `import type { ${[...names].join(', ')} } from '${mod}';`);
  const docLine: number[] = [];
  for (const [i, d] of list.entries()) {
    docLine.push(lines.length);
    lines.push(`export const doc${i}: I${d.kind} = ${JSON.stringify(d)};`);
  }
  const text = lines.join('\n');
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2023,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === file ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => (name === file ? text : readFile(name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program, program.getSourceFile(file)).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    const doc = docLine.findLastIndex((l) => l <= line);
    return `document ${doc} (${list[doc]?.kind ?? '?'}): ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
  });
}

describe('deploy/kube-proxy-ts.yaml', () => {
  const manifest = docs(readFileSync(MANIFEST, 'utf8'));
  const ds = manifest.find((d) => d.kind === 'DaemonSet')!;
  const cm = manifest.find((d) => d.kind === 'ConfigMap')!;
  const container = ds.spec.template.spec.containers[0];

  it('validates against the Kubernetes OpenAPI schemas (kubernetes-models), unknown fields included', { timeout: 60_000 }, async () => {
    expect(manifest.map((d) => d.kind)).toEqual(['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet']);
    expect(await schemaErrors(manifest)).toEqual([]);
    expect(unknownFields(manifest)).toEqual([]);
  });

  it('the checks catch what is wrong: a misspelt field, a wrong type', { timeout: 60_000 }, async () => {
    const misspelt = structuredClone(manifest);
    misspelt.find((d) => d.kind === 'DaemonSet')!.spec.template.spec.hostNetwrok = true;
    expect(await schemaErrors(misspelt)).toEqual([]);
    expect(unknownFields(misspelt).join('\n')).toMatch(
      /document 4 \(DaemonSet\): Object literal may only specify known properties, and '"hostNetwrok"' does not exist in type 'IPodSpec'/,
    );
    const mistyped = structuredClone(manifest);
    mistyped.find((d) => d.kind === 'DaemonSet')!.spec.template.spec.containers[0].livenessProbe.httpGet.port = { number: 10256 };
    expect((await schemaErrors(mistyped)).join('\n')).toMatch(/document 4 \(DaemonSet\)/);
    expect(unknownFields(mistyped).join('\n')).toMatch(/document 4 \(DaemonSet\)/);
  });

  it('runs the proxy with the configuration in the ConfigMap, without a single notice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpt-deploy-'));
    const mount = container.volumeMounts.find((m: { name: string }) => m.name === 'kube-proxy-ts').mountPath as string;
    for (const [name, text] of Object.entries(cm.data as Record<string, string>)) writeFileSync(join(dir, name), text.replaceAll(mount, dir));
    const args = (container.args as string[]).map((a) => a.replace(mount, dir).replace('$(NODE_NAME)', 'Node-1'));
    const o = (await resolveRunOptions(args)) as RunOptions;
    expect(o.notices).toEqual([]);
    expect(o).toMatchObject({
      mode: 'iptables',
      kubeconfig: join(dir, 'kubeconfig.conf'),
      proxy: { hostname: 'node-1', clusterCIDRs: ['10.244.0.0/16'] },
      healthz: { host: '0.0.0.0', port: 10256 },
      syncPeriodMs: 30_000,
      minSyncPeriodMs: 1000,
    });
    // The kubeconfig names the control-plane endpoint (never the in-cluster `kubernetes` Service) and
    // authenticates with the pod's service-account token file.
    const kc = await readKubeConfig(o.kubeconfig!);
    expect(kc.cluster.fields.server).toBe('https://CONTROL-PLANE-ENDPOINT:6443');
    const kubeconfig = docs(cm.data['kubeconfig.conf'])[0]!;
    expect(kubeconfig.users[0].user).toEqual({ tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token' });
    expect(kubeconfig.clusters[0].cluster['certificate-authority']).toBe('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt');
  });

  it('needs no cluster DNS and no Service routing to start; probes the health endpoints', () => {
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('Default');
    expect(container.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(container.livenessProbe.httpGet).toMatchObject({ path: '/livez', port: 10256 });
    expect(container.readinessProbe.httpGet).toMatchObject({ path: '/healthz', port: 10256 });
  });
});
