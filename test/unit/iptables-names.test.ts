import { describe, expect, it } from 'vitest';
import {
  cidrContains,
  fmtCIDR,
  fmtComment,
  fmtHostPort,
  fmtIP,
  fmtPort,
  fmtProbability,
  fmtProtocol,
  InvalidValueError,
} from '../../src/modes/iptables/format.ts';
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

describe('strict formatters', () => {
  it('accept canonical addresses and reject anything else', () => {
    expect(fmtIP('198.18.0.1', 'IPv4')).toBe('198.18.0.1');
    expect(fmtIP('FD00::1', 'IPv6')).toBe('fd00::1');
    for (const bad of ['198.18.0.256', '198.18.0', '198.018.0.1', ' 198.18.0.1', '198.18.0.1 -j ACCEPT', 'fd00::1', '']) {
      expect(() => fmtIP(bad, 'IPv4')).toThrow(InvalidValueError);
    }
    for (const bad of ['198.18.0.1', 'fd00::1%eth0', 'fd00::1 -j', 'gg::1']) expect(() => fmtIP(bad, 'IPv6')).toThrow(InvalidValueError);
  });

  it('check CIDRs, ports, protocols and host:port', () => {
    expect(fmtCIDR('198.19.0.0/16', 'IPv4')).toBe('198.19.0.0/16');
    for (const bad of ['198.19.0.0', '198.19.0.0/33', '198.19.0.0/1 6', 'x/8']) expect(() => fmtCIDR(bad, 'IPv4')).toThrow(InvalidValueError);
    expect(fmtPort(65535)).toBe('65535');
    for (const bad of [0, 65536, 1.5, Number.NaN]) expect(() => fmtPort(bad)).toThrow(InvalidValueError);
    expect(fmtProtocol('SCTP')).toBe('sctp');
    expect(() => fmtProtocol('ICMP' as 'TCP')).toThrow(InvalidValueError);
    expect(() => fmtProtocol('toString' as 'TCP')).toThrow(InvalidValueError);
    expect(fmtHostPort('fd00::1', 80, 'IPv6')).toBe('[fd00::1]:80');
    expect(fmtHostPort('198.19.0.1', 80, 'IPv4')).toBe('198.19.0.1:80');
  });

  it('quote comments and replace what the restore tokenizer would interpret', () => {
    expect(fmtComment('ns/name:port cluster IP')).toBe('"ns/name:port cluster IP"');
    expect(fmtComment('a"b\\c\'d#e\tf\ng$h`i')).toBe('"a_b_c_d_e_f_g_h_i"');
    expect(fmtComment('é')).toBe('"_"');
    expect(fmtComment('x'.repeat(400))).toHaveLength(255 + 2);
  });

  it('format probabilities as kube-proxy, and test CIDR membership', () => {
    expect(fmtProbability(3)).toBe('0.3333333333');
    expect(fmtProbability(2)).toBe('0.5000000000');
    expect(() => fmtProbability(0)).toThrow(InvalidValueError);
    expect(cidrContains('198.18.0.0/24', '198.18.0.1')).toBe(true);
    expect(cidrContains('198.18.0.0/24', '198.18.1.1')).toBe(false);
    expect(cidrContains('fd00::/64', 'fd00::5')).toBe(true);
    expect(cidrContains('198.18.0.0/24', 'fd00::5')).toBe(false);
  });
});
