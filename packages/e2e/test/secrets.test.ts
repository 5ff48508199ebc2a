// Issue 12: E2B's Secret API through the unchanged SDK (`Secret.create/update/getInfo/list/exists/destroy`, and
// `Secret.fill` placeholders in `network.rules`). Values are sealed to the cluster at the control plane, stored in
// cluster storage, and opened only by the nodes' egress proxy for a request matching a rule: the stand-in upstream
// (stand-in-web.ts) gets them, the sandbox never does, and the control plane's database and logs never hold them.
// Needs root; run under /tmp/cove-heavy.lock.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_TRAFFIC, Sandbox, Secret } from 'e2b';
import { request } from 'undici';
import { deployment, E2E_UPSTREAM_CA_FILE, eventually, type Deployment } from './deployment.js';
import { fetches, header, StandIn } from './stand-in-web.js';

const tag = randomBytes(4).toString('hex');
const NAME = `E2E-Key-${tag}`; // upper case on purpose: E2B lower-cases names
const VALUE1 = `cove-sv1-${randomBytes(16).toString('hex')}`;
const VALUE2 = `cove-sv2-${randomBytes(16).toString('hex')}`;
const OTHER_VALUE = `cove-svo-${randomBytes(16).toString('hex')}`;
const MOVED = `moved-${tag}`;
const MOVED_VALUE = `cove-svm-${randomBytes(16).toString('hex')}`;

/** Every file under `dir` (recursively) that contains one of `needles`. */
function filesHolding(dir: string, needles: string[]): string[] {
  const hits: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && statSync(p).size < 512 * 1024 * 1024) {
        const text = readFileSync(p);
        if (needles.some((n) => text.includes(n))) hits.push(p);
      }
    }
  };
  walk(dir);
  return hits;
}

describe('Secret API: values live sealed in the cluster and reach only the upstream', () => {
  const inet = new StandIn(tag);
  const made: Sandbox[] = [];
  let d: Deployment;
  let otherKey: string;
  let otherTeamId: string;
  const api = async (method: string, path: string, body?: unknown, key?: string): Promise<{ status: number; json: Record<string, unknown> }> => {
    const r = await request(`${d.env.E2B_API_URL}${path}`, {
      method: method as 'GET',
      headers: { 'x-api-key': key ?? d.env.E2B_API_KEY, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.body.text();
    return { status: r.statusCode, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };

  before(async () => {
    d = deployment();
    await inet.start(join(d.stateDir, E2E_UPSTREAM_CA_FILE));
    const state = JSON.parse(readFileSync(`${d.stateDir}/state.json`, 'utf8')) as { clusterId: string };
    const res = await request(`${d.env.E2B_API_URL}/admin/teams`, {
      method: 'POST',
      headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `secrets-other-${tag}`, clusterId: state.clusterId }),
    });
    const team = (await res.body.json()) as { team: { id: string }; apiKey: { key: string } };
    assert.equal(res.statusCode, 201, JSON.stringify(team));
    otherKey = team.apiKey.key;
    otherTeamId = team.team.id;
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
    for (const [n, k] of [[NAME, undefined], [NAME, otherKey], [MOVED, undefined], [MOVED, otherKey]] as const) await Secret.destroy(n, k ? { apiKey: k } : {}).catch(() => undefined);
    inet.remove();
  });

  test('create, getInfo (by id and name), list, update, exists, destroy; no answer carries the value', async () => {
    const created = await Secret.create(NAME, VALUE1, { metadata: { purpose: 'e2e' } });
    assert.match(created.secretId, /^sec_[a-z0-9]{24}$/);
    assert.equal(created.name, NAME.toLowerCase());
    assert.equal(created.version, 1);
    assert.deepEqual(created.metadata, { purpose: 'e2e' });
    assert.deepEqual(await Secret.getInfo(created.secretId), created);
    assert.deepEqual(await Secret.getInfo(NAME), created, 'by name, any case');
    const page = await Secret.list({ limit: 100 }).nextItems();
    assert.deepEqual(page.filter((s) => s.secretId === created.secretId), [created]);
    assert.equal(await Secret.exists(NAME.toLowerCase()), true);
    const updated = await Secret.update(created.secretId, VALUE2);
    assert.equal(updated.version, 2);
    assert.deepEqual(updated.metadata, { purpose: 'e2e' }, 'an update without metadata keeps it');
    assert.ok(updated.updatedAt.getTime() >= created.updatedAt.getTime());
    // Raw answers: metadata only.
    for (const r of [await api('GET', `/secrets/${created.secretId}`), await api('GET', '/secrets')]) {
      assert.equal(r.status, 200);
      const text = JSON.stringify(r.json);
      assert.ok(!text.includes(VALUE1) && !text.includes(VALUE2), 'no read surface returns a value');
    }
    // Destroy, then everything about it is gone; a second destroy is false, as the SDK documents.
    assert.equal(await Secret.destroy(NAME), true);
    assert.equal(await Secret.exists(NAME), false);
    assert.equal(await Secret.destroy(NAME), false);
    await assert.rejects(Secret.getInfo(created.secretId), { name: 'SecretNotFoundError' });
    await assert.rejects(Secret.update(NAME, 'x'), { name: 'SecretNotFoundError' });
  });

  test('bad input → 400 with a clear message that never quotes the value; duplicates 409; other teams 404', async () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ name: '', value: 'v' }, /name: must not be empty/],
      [{ name: 'n'.repeat(129), value: 'v' }, /name: must be at most 128 bytes/],
      [{ name: 'a{b}', value: 'v' }, /name: must not contain/],
      [{ name: 'sec_abc', value: 'v' }, /reserved/],
      [{ name: `ok-${tag}`, value: '' }, /value: must not be empty/],
      [{ name: `ok-${tag}`, value: `${VALUE1}${'v'.repeat(8 * 1024)}` }, /value: must be at most 8192 bytes/],
      [{ name: `ok-${tag}`, value: `${VALUE1}\r\nX-Injected: 1` }, /value: must be printable/],
      [{ name: `ok-${tag}` }, /value/],
      [{ name: `ok-${tag}`, value: 'v', metadata: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])) }, /at most 32 entries/],
      [{ name: `ok-${tag}`, value: 'v', extra: 1 }, /Unrecognized key/],
    ];
    for (const [body, msg] of bad) {
      const r = await api('POST', '/secrets', body);
      assert.equal(r.status, 400, JSON.stringify(r.json));
      assert.match(String(r.json.message), msg);
      assert.ok(!String(r.json.message).includes(VALUE1), 'the error never quotes the value');
    }
    assert.equal(await Secret.exists(`ok-${tag}`), false, 'nothing was created by a refused request');
    // Through the SDK as well: its errors carry the server's message.
    await assert.rejects(Secret.create('', 'v'), /name: must not be empty/);

    const mine = await Secret.create(NAME, VALUE1);
    const dup = await api('POST', '/secrets', { name: NAME.toUpperCase(), value: 'x' });
    assert.equal(dup.status, 409);
    assert.equal(dup.json.error_code, 'secret_name_taken');
    // Another team: the same name is its own; the first team's secret is invisible to it (404, never 403).
    const other = { apiKey: otherKey };
    assert.equal(await Secret.exists(NAME, other), false);
    assert.equal(await Secret.exists(mine.secretId, other), false);
    await assert.rejects(Secret.update(mine.secretId, 'stolen', other), { name: 'SecretNotFoundError' });
    assert.equal(await Secret.destroy(mine.secretId, other), false);
    assert.equal((await api('GET', `/secrets/${mine.secretId}`, undefined, otherKey)).status, 404);
    assert.deepEqual((await Secret.list(other).nextItems()).filter((s) => s.secretId === mine.secretId), []);
    const theirs = await Secret.create(NAME, OTHER_VALUE, other);
    assert.notEqual(theirs.secretId, mine.secretId);
    assert.equal((await Secret.getInfo(NAME)).version, 1, 'the first team\'s secret is untouched');
    assert.equal((await api('GET', '/secrets?limit=0')).status, 400);
    assert.equal((await api('GET', '/secrets?nextToken=../x')).status, 400);
  });

  test('a rule with Secret.fill sends the value upstream (HTTPS and HTTP), never into the sandbox; updates and destroy apply', async () => {
    // The secret of the previous test (VALUE1); the other team holds OTHER_VALUE under the same name.
    const rules = { 'example.test': [{ transform: { headers: { 'X-Api-Key': Secret.fill(NAME), Authorization: `Bearer ${Secret.fill(NAME)}` } } }] };
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: ['example.test', 'other.test'], denyOut: [ALL_TRAFFIC], rules } });
    made.push(sbx);
    let before = inet.seen.length;
    assert.deepEqual(await fetches(sbx, [['get', 'https://example.test/', { 'X-Api-Key': 'from-the-sandbox' }], ['get', 'http://example.test/', {}], ['get', 'http://other.test/', {}]]), [
      '200 ok example.test',
      '200 ok example.test',
      '200 ok other.test',
    ]);
    let got = inet.seen.slice(before);
    const tlsReq = got.find((s) => s.tls && s.host === 'example.test');
    assert.equal(tlsReq && header(tlsReq, 'x-api-key'), VALUE1, 'the team\'s own secret, replacing the sandbox\'s header');
    assert.equal(tlsReq && header(tlsReq, 'authorization'), `Bearer ${VALUE1}`);
    const plain = got.find((s) => !s.tls && s.host === 'example.test');
    assert.equal(plain && header(plain, 'x-api-key'), VALUE1);
    assert.equal(header(got.find((s) => s.host === 'other.test')!, 'x-api-key'), undefined, 'no rule, nothing injected');
    assert.ok(!JSON.stringify(got).includes(OTHER_VALUE), 'never another team\'s secret of the same name');

    // An update is in force for new requests within the vault's one-second reuse.
    await Secret.update(NAME, VALUE2);
    await eventually(async () => {
      const b = inet.seen.length;
      await fetches(sbx, [['get', 'https://example.test/', {}]]);
      return inet.seen.slice(b).some((s) => header(s, 'x-api-key') === VALUE2);
    }, 10_000, 'the updated value upstream');

    // Nowhere in the sandbox: its whole filesystem, every process's env and command line, its own env. The
    // patterns reach grep base64-encoded through a pipe; a canary written the same way proves the search works.
    const canary = `cove-canary-${randomBytes(12).toString('hex')}`;
    await sbx.files.write('/home/user/canary.txt', canary);
    const pats = Buffer.from(`${VALUE1}\n${VALUE2}\n${canary}\n`).toString('base64');
    const search = await sbx.commands.run(
      `P() { echo ${pats} | base64 -d; }; grep -rlsF -f <(P) --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev / ; ` +
        `cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | grep -caF -f <(P) ; env | grep -caF -f <(P) ; true`,
      { timeoutMs: 180_000, user: 'root' },
    );
    assert.deepEqual(search.stdout.trim().split('\n'), ['/home/user/canary.txt', '0', '0'], `secret search: ${search.stdout}`);

    // Destroyed: the placeholder fails closed (502), nothing reaches the upstream with a stale value.
    await Secret.destroy(NAME);
    const [failed] = await eventually(async () => {
      const r = await fetches(sbx, [['get', 'https://example.test/', {}]]);
      return r[0]!.startsWith('502') ? r : undefined;
    }, 10_000, 'a destroyed secret to fail closed');
    assert.match(failed!, /^502 .*egress_transform_failed/);
    before = inet.seen.length;
    await fetches(sbx, [['get', 'http://example.test/', {}]]);
    got = inet.seen.slice(before);
    assert.deepEqual(got.filter((s) => s.host === 'example.test'), [], 'the failed request never left the node');
    await sbx.kill();
  });

  test('a sealed value moved to another team in cluster storage does not open: the request fails closed', async () => {
    // Storage is not trusted: its writer copies the other team's sealed value over this team's object of the same
    // name. The node opens a value only for the team and name it was sealed for.
    await Secret.create(MOVED, `own-${tag}`);
    await Secret.create(MOVED, MOVED_VALUE, { apiKey: otherKey });
    const nameKey = createHash('sha256').update(MOVED).digest('hex');
    const root = join(d.storageDir, 'objects', 'secrets');
    const theirs = join(root, otherTeamId, nameKey);
    const ours = readdirSync(root).map((t) => join(root, t, nameKey)).filter((f) => f !== theirs && existsSync(f));
    assert.equal(ours.length, 1, 'this team\'s sealed object');
    copyFileSync(theirs, ours[0]!);
    const sbx = await Sandbox.create({ timeoutMs: 120_000, network: { allowOut: ['example.test'], denyOut: [ALL_TRAFFIC], rules: { 'example.test': [{ transform: { headers: { 'X-Api-Key': Secret.fill(MOVED) } } }] } } });
    made.push(sbx);
    const before = inet.seen.length;
    const [https] = await fetches(sbx, [['get', 'https://example.test/', {}]]);
    assert.match(https!, /^502 .*egress_transform_failed/);
    assert.ok(!JSON.stringify(inet.seen.slice(before)).includes(MOVED_VALUE), 'the other team\'s value never left the node');
    assert.deepEqual(inet.seen.slice(before).filter((s) => s.host === 'example.test'), []);
    await sbx.kill();
  });

  test("the control plane's database and every log hold no value; cluster storage holds them only sealed", async () => {
    const needles = [VALUE1, VALUE2, OTHER_VALUE, MOVED_VALUE];
    assert.deepEqual(filesHolding(join(d.stateDir, 'logs'), needles), []);
    const dataDir = join(d.stateDir, 'data');
    const db = readdirSync(dataDir).filter((f) => f.startsWith('control-plane.db'));
    assert.ok(db.length > 0, 'the control plane database exists');
    for (const f of db) assert.ok(!needles.some((n) => readFileSync(join(dataDir, f)).includes(n)), `${f} holds a secret value`);
    // The other team's secret is still stored in the cluster, sealed: present, but not in plaintext.
    const secretsDir = join(d.storageDir, 'objects', 'secrets');
    assert.ok(readdirSync(secretsDir, { recursive: true }).length > 0, 'sealed secrets are in cluster storage');
    assert.deepEqual(filesHolding(secretsDir, needles), []);
  });
});
