// The volume content API on the edge's traffic port (Host `api.<domain>`): the control plane (a real HTTP server
// standing in for it) judges the volume token, the edge forwards to a node with the control plane's quota — never
// the client's own `cove-*` headers or its bearer token — and answers refusals as JSON with structured codes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { request } from 'undici';
import type { FakeNode } from './fixtures/fake-node.js';
import { DOMAIN, type RunningEdge } from './fixtures/edge-harness.js';
import { startVolumeEdge, type VolumeEdge } from './fixtures/volume-edge.js';

const VOLUME = '0b8f6c1e-6d0a-4c4e-9a55-3f1d2f1c9a01';
const QUOTA = 12 * 1024 * 1024;

describe('volume content API on the traffic port', () => {
  let edge: RunningEdge;
  let node: FakeNode;
  let stand: VolumeEdge;
  const asked: Array<{ url: string; body: string; auth: string | undefined }> = [];

  before(async () => {
    stand = await startVolumeEdge((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        asked.push({ url: req.url ?? '', body, auth: req.headers.authorization });
        const token = body ? (JSON.parse(body) as { token: string }).token : '';
        const reply = (status: number, value: unknown) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(typeof value === 'string' ? value : JSON.stringify(value));
        };
        if (token === 'good') reply(200, { volumeID: VOLUME, quotaBytes: QUOTA });
        else if (token === 'held') reply(409, { code: 409, message: 'volume "v" is mounted by running sandbox "s"', error_code: 'volume_in_use' });
        else if (token === 'huge') reply(200, 'x'.repeat(1024 * 1024));
        else reply(404, { code: 404, message: 'volume not found', error_code: 'volume_not_found' });
      });
    });
    ({ edge, node } = stand);
  });

  after(() => stand.close());

  const content = (token: string | undefined, extra: Record<string, string> = {}, path = `/volumecontent/${VOLUME}/file?path=/a`) =>
    request(`${edge.trafficUrl}${path}`, {
      headers: { host: `api.${DOMAIN}:443`, ...(token ? { authorization: `Bearer ${token}` } : {}), ...extra },
    });

  it("forwards with the control plane's quota and the node's token; the client's own cove-* headers and bearer never reach the node", async () => {
    const before = node.proxyHeaders.length;
    const r = await content('good', { 'cove-volume-quota': String(1024 ** 4), 'cove-node-token': 'forged', 'e2b-sandbox-id': 'x', 'e2b-sandbox-port': '49983' });
    await r.body.dump();
    const seen = node.proxyHeaders.slice(before);
    assert.equal(seen.length, 1, 'one request reached the node');
    assert.equal(seen[0]!['cove-volume-quota'], String(QUOTA));
    assert.notEqual(seen[0]!['cove-node-token'], 'forged');
    assert.equal(seen[0]!.authorization, undefined);
    assert.equal(seen[0]!['e2b-sandbox-id'], undefined);
    const last = asked.at(-1)!;
    assert.equal(last.url, `/cluster/v1/volumes/${VOLUME}/content-access`);
    assert.deepEqual(JSON.parse(last.body), { token: 'good' });
  });

  it('refusals: no token 401, unknown token 404, held 409, a body over the quota 413, all JSON with error_code', async () => {
    const cases: Array<[string | undefined, number, string, Record<string, string>?]> = [
      [undefined, 401, 'volume_token_missing'],
      ['someone-elses', 404, 'volume_not_found'],
      ['held', 409, 'volume_in_use'],
    ];
    for (const [token, status, code] of cases) {
      const r = await content(token);
      assert.equal(r.statusCode, status, String(token));
      assert.equal(((await r.body.json()) as { error_code: string }).error_code, code);
    }
    const before = node.proxyHeaders.length;
    const big = await request(`${edge.trafficUrl}/volumecontent/${VOLUME}/file?path=/big`, {
      method: 'PUT',
      headers: { host: `api.${DOMAIN}`, authorization: 'Bearer good', 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(QUOTA + 1),
    });
    assert.equal(big.statusCode, 413);
    assert.equal(((await big.body.json()) as { error_code: string }).error_code, 'volume_file_too_large');
    assert.equal(node.proxyHeaders.length, before, 'nothing reached the node');
    const shape = await content('good', {}, '/volumecontent/not-a-volume/file?path=/a');
    assert.equal(shape.statusCode, 404);
    await shape.body.dump();
  });

  it("a control plane reply that is too large is not read past its bound: 503, nothing forwarded", async () => {
    const before = node.proxyHeaders.length;
    const r = await content('huge');
    assert.equal(r.statusCode, 503);
    assert.equal(((await r.body.json()) as { error_code: string }).error_code, 'volume_content_unavailable');
    assert.equal(node.proxyHeaders.length, before);
  });

  it('other hosts are sandbox traffic as before (api.<domain> is not a sandbox route)', async () => {
    const r = await request(`${edge.trafficUrl}/volumecontent/${VOLUME}/file?path=/a`, { headers: { host: `api.other.${DOMAIN}` } });
    assert.equal(r.statusCode, 400);
    await r.body.dump();
  });
});
