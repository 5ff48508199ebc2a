// The policy model without the network: parsing E2B's network config, its structured 400 errors, the decision
// function, rule precedence, placeholders, maskRequestHost, and the bounded ClientHello / HTTP head parsers
// fed real and hostile bytes.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { describe, it } from 'node:test';
import {
  ALL_TRAFFIC,
  decide,
  describePolicy,
  dnsAllowed,
  errorReply,
  maskRequestHost,
  parseHttpHost,
  parseNetworkPolicy,
  parseQuery,
  parseSni,
  PolicyError,
  renderSandboxNft,
  resolvePlaceholders,
  rulesFor,
  clientHelloComplete,
} from '../src/index.js';

function issues(input: unknown): Array<{ code: string; field: string }> {
  try {
    parseNetworkPolicy(input);
  } catch (e) {
    assert.ok(e instanceof PolicyError);
    const body = e.toJSON();
    assert.equal(body.code, 'invalid_network_policy');
    return body.issues.map((i) => ({ code: i.code, field: i.field }));
  }
  assert.fail('expected a PolicyError');
}

describe('parseNetworkPolicy', () => {
  it('normalises IPs, CIDRs (host bits cleared) and hostnames', () => {
    const p = parseNetworkPolicy({ allowOut: ['8.8.8.8', '10.1.2.3/8', 'API.Example.COM.', '*.Example.org'], denyOut: [ALL_TRAFFIC] });
    assert.deepEqual(p.allowCidrs.map((c) => c.text), ['8.8.8.8/32', '10.0.0.0/8']);
    assert.deepEqual(p.allowHosts, ['api.example.com']);
    assert.deepEqual(p.allowWildcards, ['example.org']);
    assert.deepEqual(describePolicy(p), { allowOut: ['8.8.8.8/32', '10.0.0.0/8', 'api.example.com', '*.example.org'], denyOut: ['0.0.0.0/0'] });
  });

  it('allow_internet_access:false is a deny of 0.0.0.0/0', () => {
    assert.deepEqual(parseNetworkPolicy({ allow_internet_access: false }).denyCidrs.map((c) => c.text), ['0.0.0.0/0']);
    assert.deepEqual(parseNetworkPolicy({ allow_internet_access: true }).denyCidrs, []);
  });

  it('bad input yields every issue with code and field', () => {
    assert.deepEqual(issues({ allowOut: ['10.0.0.0/33', '', 'a..b', '256.1.1.1', 'fe80::1'], denyOut: ['example.com'] }), [
      { code: 'invalid_cidr', field: 'allowOut[0]' },
      { code: 'invalid_selector', field: 'allowOut[1]' },
      { code: 'invalid_selector', field: 'allowOut[2]' },
      { code: 'invalid_cidr', field: 'allowOut[3]' },
      { code: 'ipv6_unsupported', field: 'allowOut[4]' },
      { code: 'hostname_in_deny', field: 'denyOut[0]' },
    ]);
    assert.deepEqual(issues({ allowOut: ['a'.repeat(300)] }), [{ code: 'too_long', field: 'allowOut[0]' }]);
    assert.deepEqual(issues({ allowOut: [`${'a'.repeat(64)}.com`] }), [{ code: 'invalid_selector', field: 'allowOut[0]' }]);
    assert.equal(issues({ allowOut: Array.from({ length: 257 }, (_, i) => `10.0.${i >> 8}.${i & 255}`) })[0].code, 'too_many');
    assert.deepEqual(issues({ unknownSelector: 1 }).map((i) => i.code), ['invalid_type']);
    assert.deepEqual(issues({ allowOut: 'not-a-list' }), [{ code: 'invalid_type', field: 'allowOut' }]);
  });

  it('rules: bare "*", too many hosts, header injection and unusable placeholders are refused', () => {
    assert.deepEqual(issues({ rules: { '*': [] } }), [{ code: 'invalid_rule_host', field: 'rules["*"]' }]);
    const eleven = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`h${i}.test`, []]));
    assert.equal(issues({ rules: eleven })[0].code, 'too_many');
    assert.deepEqual(issues({ rules: { 'a.test': [{ transform: { headers: { 'X-A': 'v\r\nInjected: 1' } } }] } }).map((i) => i.code), ['invalid_header']);
    assert.deepEqual(issues({ rules: { 'a.test': [{ transform: { headers: { 'Bad Name': 'v' } } }] } }).map((i) => i.code), ['invalid_header']);
    assert.deepEqual(issues({ rules: { 'a.test': [{ transform: { headers: { A: '${e2b.secrets.}' } } }] } }).map((i) => i.code), ['invalid_placeholder']);
    assert.deepEqual(issues({ rules: { 'a.test': [{ transform: { headers: { A: 'x' } }, extra: 1 }] } }).map((i) => i.code), ['invalid_type']);
  });

  it('egressProxy: host:port is SOCKS5 (E2B), http:// selects CONNECT; bad addresses and lone passwords are refused', () => {
    assert.deepEqual(parseNetworkPolicy({ egressProxy: { address: 'proxy.example.com:1080', username: 'u', password: 'p' } }).egressProxy, {
      kind: 'socks5', host: 'proxy.example.com', port: 1080, username: 'u', password: 'p',
    });
    assert.equal(parseNetworkPolicy({ egressProxy: { address: 'http://10.0.0.1:3128' } }).egressProxy?.kind, 'http-connect');
    assert.equal(parseNetworkPolicy({ egressProxy: null }).egressProxy, undefined);
    assert.deepEqual(issues({ egressProxy: { address: 'nope' } }), [{ code: 'invalid_proxy', field: 'egressProxy.address' }]);
    assert.deepEqual(issues({ egressProxy: { address: 'ftp://a:1' } }), [{ code: 'invalid_proxy', field: 'egressProxy.address' }]);
    assert.deepEqual(issues({ egressProxy: { address: 'a.b:1', password: 'p' } }), [{ code: 'invalid_proxy', field: 'egressProxy.password' }]);
    assert.deepEqual(issues({ egressProxy: { address: 'a.b:1', username: 'x'.repeat(256) } }), [{ code: 'invalid_proxy', field: 'egressProxy.username' }]);
    assert.equal('password' in (describePolicy(parseNetworkPolicy({ egressProxy: { address: 'a.b:1', username: 'u', password: 'p' } })).egressProxy as object), false);
  });
});

describe('decide', () => {
  const p = parseNetworkPolicy({ allowOut: ['1.1.1.1', 'ok.test', '*.wild.test'], denyOut: [ALL_TRAFFIC] });
  it('no lists allow everything', () => {
    assert.deepEqual(decide(parseNetworkPolicy({}), '9.9.9.9', 443), { allow: true, reason: 'no-rules', connectTo: 'original' });
  });
  it('allow wins over deny; hostname allows connect to the name, not the address', () => {
    assert.equal(decide(p, '1.1.1.1', 53).allow, true);
    assert.deepEqual(decide(p, '9.9.9.9', 443), { allow: false, reason: 'ip-denied' });
    assert.deepEqual(decide(p, '9.9.9.9', 443, 'ok.test'), { allow: true, reason: 'host-allowed', connectTo: 'hostname' });
    assert.deepEqual(decide(p, '9.9.9.9', 443, 'evil.test'), { allow: false, reason: 'host-not-allowed' });
    assert.equal(decide(p, '9.9.9.9', 443, 'a.b.wild.test').allow, true);
    assert.equal(decide(p, '9.9.9.9', 443, 'wild.test').allow, false, 'a wildcard never matches the apex');
    assert.equal(decide(p, '9.9.9.9', 443, 'xwild.test').allow, false);
    const d = parseNetworkPolicy({ allowOut: ['5.5.5.0/24'], denyOut: ['5.0.0.0/8'] });
    assert.equal(decide(d, '5.5.5.5', 80).allow, true);
    assert.equal(decide(d, '5.6.5.5', 80).allow, false);
    assert.equal(decide(d, '6.6.6.6', 80).allow, true);
  });
  it('DNS answers only allowed names under a deny-all', () => {
    assert.equal(dnsAllowed(p, 'ok.test'), true);
    assert.equal(dnsAllowed(p, 'x.wild.test'), true);
    assert.equal(dnsAllowed(p, 'leak-secret.evil.test'), false);
    assert.equal(dnsAllowed(parseNetworkPolicy({ denyOut: ['1.2.3.4'] }), 'anything.test'), true);
  });
});

describe('rules, placeholders, maskRequestHost', () => {
  const p = parseNetworkPolicy({
    rules: {
      'API.example.com': [{ transform: { headers: { A: 'exact' } } }],
      '*.example.com': [{ transform: { headers: { A: 'short' } } }],
      '*.deep.example.com': [{ transform: { headers: { A: 'long' } } }],
    },
  });
  it('exact first, then the longest wildcard suffix; never the apex', () => {
    assert.equal(rulesFor(p, 'api.example.com')?.[0].set[0].value, 'exact');
    assert.equal(rulesFor(p, 'x.deep.example.com')?.[0].set[0].value, 'long');
    assert.equal(rulesFor(p, 'x.example.com')?.[0].set[0].value, 'short');
    assert.equal(rulesFor(p, 'example.com'), undefined);
  });
  it('placeholders resolve through the callback, names up to the next brace', async () => {
    const seen: string[] = [];
    const v = await resolvePlaceholders('Bearer ${e2b.secrets.a-b} / ${e2b.identity.tokens.aws}', async (k, n) => {
      seen.push(`${k}:${n}`);
      return 'V';
    });
    assert.equal(v, 'Bearer V / V');
    assert.deepEqual(seen, ['secrets:a-b', 'identity.tokens:aws']);
    await assert.rejects(resolvePlaceholders('${e2b.secrets.x}', async () => 'a\r\nb'));
  });
  it('maskRequestHost replaces ${PORT}', () => {
    assert.equal(maskRequestHost('${PORT}-sbx.example.com', 3000), '3000-sbx.example.com');
    assert.equal(maskRequestHost('fixed.example.com', 3000), 'fixed.example.com');
  });
});

describe('wire parsers', () => {
  it('reads the SNI of a real ClientHello, and nothing from garbage or truncated hellos', async () => {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const got = once(server, 'connection') as Promise<[Socket]>;
    const c = tlsConnect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, servername: 'Api.Example.com' });
    c.on('error', () => {});
    const [s] = await got;
    let buf = Buffer.alloc(0);
    while (clientHelloComplete(buf) === 'more') buf = Buffer.concat([buf, (await once(s, 'data'))[0] as Buffer]);
    assert.equal(parseSni(buf), 'api.example.com');
    assert.equal(parseSni(buf.subarray(0, buf.length - 10)), undefined);
    assert.equal(clientHelloComplete(buf.subarray(0, buf.length - 10)), 'more');
    assert.equal(clientHelloComplete(Buffer.from('GET / HTTP/1.1\r\n')), 'bad');
    assert.equal(clientHelloComplete(Buffer.from('160301ffff', 'hex')), 'bad');
    // Lengths that point past the end are bounded, never thrown.
    const mangled = Buffer.from(buf);
    mangled.writeUInt16BE(0xffff, 5 + 4 + 2 + 32 + 1 + mangled[5 + 4 + 2 + 32]);
    assert.equal(parseSni(mangled), undefined);
    c.destroy();
    s.destroy();
    server.close();
  });
  it('HTTP Host: one, well-formed, no folding', () => {
    assert.equal(parseHttpHost(Buffer.from('GET / HTTP/1.1\r\nHost: A.test:8080\r\n\r\n')), 'a.test');
    assert.equal(parseHttpHost(Buffer.from('GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n')), undefined);
    assert.equal(parseHttpHost(Buffer.from('GET / HTTP/1.1\r\nX: 1\r\n Host: b.test\r\n\r\n')), undefined);
    assert.equal(parseHttpHost(Buffer.from('GET / HTTP/1.1\r\nHost: a.test@b.test\r\n\r\n')), undefined);
    assert.equal(parseHttpHost(Buffer.from('GET / HTTP/1.1\r\n\r\n')), undefined);
  });
  it('DNS: one bounded question; anything else is a FORMERR', () => {
    const q = Buffer.concat([Buffer.from('123401000001000000000000', 'hex'), Buffer.from([1, 0x61, 4]), Buffer.from('test'), Buffer.from([0, 0, 1, 0, 1])]);
    assert.deepEqual(parseQuery(q), { id: 0x1234, name: 'a.test', qtype: 1, end: q.length });
    const pointer = Buffer.concat([q.subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    assert.equal(parseQuery(pointer), undefined);
    const refused = errorReply(q, 5);
    assert.equal(refused.readUInt16BE(2) & 0xf, 5);
    assert.equal(refused.readUInt16BE(6), 0, 'no answers');
    assert.equal(errorReply(Buffer.from([1]), 1).length, 12);
  });
});

describe('nft script', () => {
  const ports = { http: 1, tls: 2, tunnel: 3, dns: 4, httpToDenied: 5, tlsToDenied: 6 };
  it('only what the policy needs is redirected; names are never spliced in unchecked', () => {
    const open = renderSandboxNft({ table: 't', iface: 'veth0', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({}), ports });
    assert.doesNotMatch(open, /redirect/);
    const ip = renderSandboxNft({ table: 't', iface: 'veth0', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({ allowOut: ['1.1.1.1'], denyOut: [ALL_TRAFFIC] }), ports });
    assert.match(ip, /udp dport 53 redirect to :4/);
    assert.doesNotMatch(ip, /dport 443/);
    const host = renderSandboxNft({ table: 't', iface: 'veth0', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({ allowOut: ['a.test'], denyOut: [ALL_TRAFFIC] }), ports });
    assert.match(host, /ip daddr @allow accept\n.*ip daddr @deny tcp dport 80 redirect to :5\n.*ip daddr @deny tcp dport 443 redirect to :6/);
    const rules = renderSandboxNft({ table: 't', iface: 'veth0', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({ rules: { 'a.test': [] } }), ports });
    assert.match(rules, /tcp dport 443 redirect to :2/);
    const chained = renderSandboxNft({ table: 't', iface: 'veth0', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({ egressProxy: { address: 'p.test:1080' } }), ports });
    assert.match(chained, /meta l4proto tcp redirect to :3/);
    assert.match(open, /iifname "veth0" ip saddr != 10.0.0.2 drop/);
    assert.throws(() => renderSandboxNft({ table: 't', iface: 'veth0', sandboxIp: '1.2.3.4 accept', policy: parseNetworkPolicy({}), ports }));
    assert.throws(() => renderSandboxNft({ table: 't; flush ruleset', iface: 'veth0', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({}), ports }));
    assert.throws(() => renderSandboxNft({ table: 't', iface: 'x" accept', sandboxIp: '10.0.0.2', policy: parseNetworkPolicy({}), ports }));
  });
});
