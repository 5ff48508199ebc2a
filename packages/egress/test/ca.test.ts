// The derived sandbox CA (ca.ts): the same key on every node holding the cluster key, so a leaf minted by one
// node's re-issue verifies against the copy another node installed in the sandbox; other sandboxes and other
// cluster keys get unrelated CAs. Real TLS over loopback, no root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createServer, connect } from 'node:tls';
import { SandboxCa } from '../src/ca.js';

async function handshake(server: SandboxCa, trusted: SandboxCa, host: string): Promise<string | undefined> {
  const ctx = await server.contextFor(host);
  const srv = createServer({ SNICallback: (_n, cb) => cb(null, ctx) }, (s) => s.end('ok'));
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  try {
    const c = connect({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port, servername: host, ca: [trusted.certPem] });
    return await new Promise<string | undefined>((resolve) => {
      c.once('secureConnect', () => {
        c.destroy();
        resolve(undefined);
      });
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
  } finally {
    srv.close();
  }
}

test('a CA derived on another node verifies leaves of this one; other sandboxes and keys do not', async () => {
  const key = 'k'.repeat(40);
  const [nodeA, nodeB, other, otherKey] = await Promise.all([
    SandboxCa.derive(key, 'sbx1'),
    SandboxCa.derive(key, 'sbx1'),
    SandboxCa.derive(key, 'sbx2'),
    SandboxCa.derive('z'.repeat(40), 'sbx1'),
  ]);
  const pub = (c: SandboxCa): string => new X509Certificate(c.certPem).publicKey.export({ type: 'spki', format: 'pem' }) as string;
  assert.equal(pub(nodeA), pub(nodeB));
  assert.notEqual(pub(nodeA), pub(other));
  assert.notEqual(pub(nodeA), pub(otherKey));
  assert.ok(new X509Certificate(nodeA.certPem).ca);
  // The sandbox got nodeA's certificate at create; after a resume nodeB terminates its TLS.
  assert.equal(await handshake(nodeB, nodeA, 'api.example.test'), undefined);
  assert.equal(await handshake(nodeA, nodeA, 'api.example.test'), undefined);
  // Another sandbox's CA or another cluster's is not trusted: the abuse a wrong derivation would allow.
  assert.notEqual(await handshake(other, nodeA, 'api.example.test'), undefined);
  assert.notEqual(await handshake(otherKey, nodeA, 'api.example.test'), undefined);
  // The CA file the sandbox gets holds no private key.
  assert.doesNotMatch(nodeA.certPem, /PRIVATE KEY/);
});
