// Hostile tenants and template names, through the unchanged `e2b` SDK against a real deployment: two teams of
// one cluster build the same template name and each gets its own (no squatting or shadowing); another team's
// public template is reachable only as `team-slug/name`, never by the bare name, and not at all once private.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Sandbox, Template } from 'e2b';
import { request } from 'undici';
import { deployment } from './deployment.js';

const BUILD_TIMEOUT = 240_000;

interface TeamKey {
  key: string;
  slug: string;
}

describe('template names between two teams through the unchanged SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const name = `shared-${tag}`;
  const made: Sandbox[] = [];
  let alpha: TeamKey;
  let bravo: TeamKey;
  let apiUrl: string;

  async function newTeam(label: string): Promise<TeamKey> {
    const d = deployment();
    const { clusterId } = JSON.parse(readFileSync(`${d.stateDir}/state.json`, 'utf8')) as { clusterId: string };
    const res = await request(`${d.env.E2B_API_URL}/admin/teams`, {
      method: 'POST',
      headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `${label}-${tag}`, clusterId }),
    });
    const body = (await res.body.json()) as { team: { slug: string }; apiKey: { key: string } };
    assert.equal(res.statusCode, 201, JSON.stringify(body));
    return { key: body.apiKey.key, slug: body.team.slug };
  }

  /** A template whose sandboxes say which team built it. */
  const marked = (who: string) => Template().fromTemplate('base').runCmd(`echo ${who} > /tmp/built-by`);

  async function builtBy(ref: string, team: TeamKey): Promise<string> {
    const sbx = await Sandbox.create(ref, { apiKey: team.key, timeoutMs: 120_000 });
    made.push(sbx);
    const out = (await sbx.commands.run('cat /tmp/built-by')).stdout.trim();
    await sbx.kill();
    return out;
  }

  before(async () => {
    apiUrl = deployment().env.E2B_API_URL;
    alpha = await newTeam('alpha');
    bravo = await newTeam('bravo');
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  test('team B building the name team A uses gets its own template; each bare name runs its own team’s', { timeout: 2 * BUILD_TIMEOUT }, async () => {
    const a = await Template.build(marked('alpha'), name, { apiKey: alpha.key, cpuCount: 1, memoryMB: 512 });
    assert.equal(await Template.exists(name, { apiKey: bravo.key }), false, "A's name is free in B's namespace");
    const b = await Template.build(marked('bravo'), name, { apiKey: bravo.key, cpuCount: 1, memoryMB: 512 });
    assert.notEqual(b.templateId, a.templateId);
    assert.equal(await builtBy(name, alpha), 'alpha');
    assert.equal(await builtBy(name, bravo), 'bravo');
    assert.equal(await builtBy(`${alpha.slug}/${name}`, alpha), 'alpha', 'the own namespace is the own template');
  });

  test("B's public template: not by bare name from A, only as slug/name; private again, gone", { timeout: BUILD_TIMEOUT }, async () => {
    const publicName = `pub-${tag}`;
    const b = await Template.build(marked('bravo-public'), publicName, { apiKey: bravo.key, cpuCount: 1, memoryMB: 512 });
    // Publishing is the CLI's `template publish`: PATCH /v2/templates/{id} {public}.
    const publish = async (pub: boolean) => {
      const r = await request(`${apiUrl}/v2/templates/${b.templateId}`, {
        method: 'PATCH',
        headers: { 'x-api-key': bravo.key, 'content-type': 'application/json' },
        body: JSON.stringify({ public: pub }),
      });
      await r.body.text();
      assert.equal(r.statusCode, 200);
    };
    await publish(true);
    await assert.rejects(Sandbox.create(publicName, { apiKey: alpha.key }), /404|not found/i, 'the bare name is A’s namespace');
    assert.equal(await Template.exists(publicName, { apiKey: alpha.key }), false);
    assert.equal(await Template.exists(`${bravo.slug}/${publicName}`, { apiKey: alpha.key }), true);
    assert.equal(await builtBy(`${bravo.slug}/${publicName}`, alpha), 'bravo-public');

    await publish(false);
    await assert.rejects(Sandbox.create(`${bravo.slug}/${publicName}`, { apiKey: alpha.key }), /404|not found/i);
    assert.equal(await Template.exists(`${bravo.slug}/${publicName}`, { apiKey: alpha.key }), false, 'no 403 telling a private name exists');
    // And A cannot plant a template into B's namespace.
    await assert.rejects(Template.build(marked('planted'), `${bravo.slug}/planted-${tag}`, { apiKey: alpha.key }), /403|namespace/i);
  });
});
