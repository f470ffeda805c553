import { describe, expect, it } from 'vitest';
import { InvalidValueError } from '../../src/model/addr.ts';
import { commentSafe, fmtProbability, fmtSeconds, quoteComment } from '../../src/modes/iptables/format.ts';
import { endpointChain, hash16, isOwnedChain, serviceChains, servicePortName } from '../../src/modes/iptables/names.ts';
import { servicePort } from './model-fixtures.ts';

describe('chain names', () => {
  it('are the ones kube-proxy uses for the same service ports and endpoints', () => {
    // Well-known names from kube-proxy clusters and from kube-proxy's own tests.
    expect(serviceChains('default/kubernetes:https', 'tcp').svc).toBe('KUBE-SVC-NPX46M4PTMTKRN6Y');
    expect(serviceChains('kube-system/kube-dns:dns', 'udp').svc).toBe('KUBE-SVC-TCOU7JCQXEZGVUNU');
    expect(serviceChains('kube-system/kube-dns:dns-tcp', 'tcp').svc).toBe('KUBE-SVC-ERIFXISQEP7F7OF4');
    expect(serviceChains('kube-system/kube-dns:metrics', 'tcp').svc).toBe('KUBE-SVC-JD5MR3NA4I4DYORP');
    expect(serviceChains('ns1/svc1:p80', 'tcp')).toEqual({
      svc: 'KUBE-SVC-XPGD46QRK7WJZT7O',
      svl: 'KUBE-SVL-XPGD46QRK7WJZT7O',
      ext: 'KUBE-EXT-XPGD46QRK7WJZT7O',
      fw: 'KUBE-FW-XPGD46QRK7WJZT7O',
    });
    expect(endpointChain('ns1/svc1:p80', 'tcp', '10.180.0.1:80')).toBe('KUBE-SEP-SXIVWICOYRO3J4NJ');
  });

  it('fit the 28-character limit and depend on the protocol', () => {
    const long = 'a'.repeat(63);
    const names = [...Object.values(serviceChains(`${long}/${long}:${long}`, 'sctp')), endpointChain(long, 'udp', '[fd00::1]:65535')];
    for (const n of names) expect(n.length).toBeLessThanOrEqual(28);
    expect(serviceChains('a/b:c', 'tcp').svc).not.toBe(serviceChains('a/b:c', 'udp').svc);
    expect(hash16('x')).toMatch(/^[A-Z2-7]{16}$/);
  });

  it('uses "namespace/name" for an unnamed port, as kube-proxy', () => {
    expect(servicePortName(servicePort({ namespace: 'a', name: 'b', portName: '' }))).toBe('a/b');
    expect(servicePortName(servicePort({ namespace: 'a', name: 'b', portName: 'http' }))).toBe('a/b:http');
  });

  it('owns kube-proxy chains but never kubelet ones', () => {
    for (const ch of ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-SVC-X', 'KUBE-SEP-X', 'KUBE-XLB-X', 'KUBE-FW-X']) {
      expect(isOwnedChain('nat', ch)).toBe(true);
    }
    for (const ch of ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-PROXY-FIREWALL', 'KUBE-PROXY-CANARY'])
      expect(isOwnedChain('filter', ch)).toBe(true);
    for (const ch of ['KUBE-FIREWALL', 'KUBE-MARK-DROP', 'KUBE-KUBELET-CANARY', 'KUBE-IPTABLES-HINT', 'DOCKER', 'PREROUTING']) {
      expect(isOwnedChain('nat', ch)).toBe(false);
      expect(isOwnedChain('filter', ch)).toBe(false);
    }
    expect(isOwnedChain('filter', 'KUBE-SVC-X')).toBe(false);
    expect(isOwnedChain('mangle', 'KUBE-PROXY-CANARY')).toBe(true);
  });
});

describe('iptables formatters', () => {
  const comment = (text: string) => quoteComment(commentSafe(text));

  it('quote comments and replace what the restore tokenizer would interpret', () => {
    expect(comment('ns/name:port cluster IP')).toBe('"ns/name:port cluster IP"');
    expect(comment('a"b\\c\'d#e\tf\ng$h`i')).toBe('"a_b_c_d_e_f_g_h_i"');
    expect(comment('é')).toBe('"_"');
    expect(comment('x'.repeat(400))).toHaveLength(255 + 2);
  });

  it('format probabilities as kube-proxy, and affinity timeouts the API allows', () => {
    expect(fmtProbability(3)).toBe('0.3333333333');
    expect(fmtProbability(2)).toBe('0.5000000000');
    expect(() => fmtProbability(0)).toThrow(InvalidValueError);
    expect(fmtSeconds(10800)).toBe('10800');
    for (const bad of [0, 86401, 1.5, Number.NaN]) expect(() => fmtSeconds(bad)).toThrow(InvalidValueError);
  });
});
