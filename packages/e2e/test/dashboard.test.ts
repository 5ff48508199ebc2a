// Issue 15, the dashboard, end to end in headless Chromium against a deployment: a person signs in with an
// access token, creates an API key, the unchanged SDK creates a sandbox with that key, the sandbox appears in
// the list without a reload, its logs and metrics load from the cluster's public port (not the control plane),
// it is paused and killed from the page; the cluster view shows health. What the sandbox controls (its
// metadata, the command lines in its logs) is shown as text, never run as markup. Screenshots go to the test
// output directory (COVE_TEST_OUTPUT_DIR, default .cove/test-output/dashboard).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Sandbox, Template } from 'e2b';
import { chromium, type Browser, type Page } from 'playwright-core';
import { request } from 'undici';
import { deployment, eventually, repoRoot } from './deployment.js';

const CHROMIUM = process.env.COVE_CHROMIUM || '/usr/bin/chromium';

/**
 * Chromium fails a load with ERR_NETWORK_CHANGED when an address appears on the host, which every sandbox the warm
 * pools start meanwhile does (its veth); a user reloads then, and so does this, at most twice.
 */
async function goto(page: Page, url: string, attempt = 1): Promise<void> {
  try {
    await page.goto(url);
  } catch (err) {
    if (attempt < 3 && /ERR_NETWORK_CHANGED/.test(String(err))) return goto(page, url, attempt + 1);
    throw err;
  }
}
const OUT = process.env.COVE_TEST_OUTPUT_DIR ? join(process.env.COVE_TEST_OUTPUT_DIR, 'dashboard') : join(repoRoot, '.cove', 'test-output', 'dashboard');
/** Markup a sandbox controls; if the page ever parsed it, `window.__pwned` would be set. */
const HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';

describe('dashboard in a browser against a deployment', () => {
  const tag = randomBytes(4).toString('hex');
  let browser: Browser;
  let page: Page;
  let accessToken: string;
  let sbx: Sandbox | undefined;
  /** The key created in the page. */
  let key: string;
  /** Every URL the page fetched, to tell where logs came from. */
  const fetched: string[] = [];
  const shot = (name: string) => page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });

  before(async () => {
    const d = deployment();
    mkdirSync(OUT, { recursive: true });
    // A team of its own, so the list holds only this test's sandboxes.
    const state = JSON.parse(readFileSync(join(d.stateDir, 'state.json'), 'utf8')) as { clusterId: string };
    const t = await request(`${d.env.E2B_API_URL}/admin/teams`, {
      method: 'POST',
      headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `dash-${tag}`, clusterId: state.clusterId }),
    });
    const team = (await t.body.json()) as { apiKey: { key: string } };
    assert.equal(t.statusCode, 201);
    // The person signs in with an access token, as `e2b auth login` holds one.
    const a = await request(`${d.env.E2B_API_URL}/access-tokens`, { method: 'POST', headers: { 'x-api-key': team.apiKey.key, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'person' }) });
    accessToken = ((await a.body.json()) as { token: string }).token;
    assert.equal(a.statusCode, 201);

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('request', (r) => void fetched.push(r.url()));
    page.on('dialog', (dlg) => void dlg.accept());
  });

  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await browser?.close();
  });

  test('without a session the dashboard API answers 401 JSON and the page shows the sign-in form', async () => {
    const d = deployment();
    const r = await request(`${d.env.E2B_API_URL}/dashboard/api/v2/sandboxes`, { headers: { 'x-cove-dashboard': '1' } });
    assert.equal(r.statusCode, 401);
    assert.equal(((await r.body.json()) as { error_code: string }).error_code, 'no_session');
    await goto(page, `${d.env.E2B_API_URL}/dashboard/`);
    await page.waitForSelector('#sign-in #token');
    await shot('01-sign-in');
  });

  test('sign in, create a key, use it from the SDK, watch the sandbox appear, open its logs and metrics', { timeout: 180_000 }, async () => {
    const d = deployment();
    await page.fill('#token', 'sk_e2b_' + '0'.repeat(40));
    await page.click('#sign-in button[type=submit]');
    await page.waitForSelector('#sign-in .error');
    await page.fill('#token', accessToken);
    await page.click('#sign-in button[type=submit]');
    await page.waitForSelector('#sign-out');
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === 'cove_dashboard');
    assert.ok(session?.httpOnly && session.sameSite === 'Strict', 'an HttpOnly, SameSite=Strict session cookie');
    assert.ok(!session.value.includes(accessToken), 'the pasted token is not what the browser keeps');
    assert.equal(await page.evaluate(() => document.cookie), '', 'page script sees no session');

    await goto(page, `${d.env.E2B_API_URL}/dashboard/#/keys`);
    await page.fill('#key-name', `sdk-${tag}`);
    await page.click('#create-key button[type=submit]');
    key = (await page.textContent('#new-key', { timeout: 15_000 }))!.trim();
    assert.match(key, /^e2b_[0-9a-f]{40}$/);
    await page.waitForSelector(`#keys-table >> text=sdk-${tag}`);
    await shot('02-key-created');

    await goto(page, `${d.env.E2B_API_URL}/dashboard/#/sandboxes`);
    await page.waitForSelector('#sandboxes');
    sbx = await Sandbox.create({ apiKey: key, timeoutMs: 300_000, metadata: { owner: `dash-${tag}`, note: HOSTILE } });
    const row = await page.waitForSelector(`a[data-sandbox-id="${sbx.sandboxId}"]`, { timeout: 30_000 });
    assert.ok(row, 'the sandbox shows up without a reload');
    const table = (await page.textContent('#sandboxes-table'))!;
    assert.ok(table.includes(`note=${HOSTILE}`), 'metadata shown as text');
    assert.equal(await page.locator('#sandboxes-table img, #sandboxes-table script').count(), 0, 'no markup from metadata');
    await page.fill('#filter', `dash-${tag}`);
    assert.equal(await page.locator('#sandboxes-table tbody tr').count(), 1, 'the filter keeps the matching sandbox');
    await page.fill('#filter', 'no-such-sandbox');
    await page.waitForSelector('#sandboxes >> text=No sandboxes.');
    await page.fill('#filter', '');
    await shot('03-sandbox-listed');

    // A command whose line (in envd's "process started" entry) is hostile markup.
    const canary = `canary-${tag}`;
    await sbx.commands.run(`echo ${canary} '${HOSTILE.replace(/'/g, '')}'`);
    await page.click(`a[data-sandbox-id="${sbx.sandboxId}"]`);
    await page.waitForFunction((c) => document.getElementById('logs')?.textContent?.includes(c), canary, { timeout: 60_000, polling: 500 }).catch(async (e: Error) => {
      await shot('04-sandbox-logs-failed');
      throw new Error(`${e.message}; #logs: ${await page.textContent('#logs')}; fetched: ${fetched.filter((u) => u.includes('/logs')).join(' ')}`);
    });
    const logs = (await page.textContent('#logs'))!;
    assert.match(logs, /process started/);
    assert.ok(logs.includes('<img src=x'), 'the hostile command line is shown as text');
    assert.equal(await page.locator('#logs img, #logs script').count(), 0);
    await page.waitForSelector('#sandbox-metrics svg');
    await shot('04-sandbox-logs');
    assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined, 'nothing the sandbox wrote ran in the page');

    // The log lines came from the cluster's public port with a grant, not from the control plane.
    const cp = new URL(d.env.E2B_API_URL).origin;
    const fromCluster = fetched.filter((u) => u.includes(`/v2/sandboxes/${sbx!.sandboxId}/logs`) && u.includes('cove_grant='));
    assert.ok(fromCluster.length > 0, `the browser fetched logs from the cluster: ${fetched.filter((u) => u.includes('/logs')).join(' ')}`);
    assert.ok(fromCluster.every((u) => new URL(u).origin !== cp), 'logs are read from another origin than the control plane');
  });

  test('a build and its logs, read from the cluster; the build output is text', { timeout: 300_000 }, async () => {
    const d = deployment();
    const canary = `build-canary-${tag}`;
    const built = await Template.build(Template().fromTemplate('base').runCmd(`echo ${canary} '${HOSTILE.replace(/'/g, '')}'`), `dash-${tag}`, { apiKey: key, cpuCount: 1, memoryMB: 512 });
    await goto(page, `${d.env.E2B_API_URL}/dashboard/#/templates`);
    await page.click(`#templates-table a[href="#/templates/${built.templateId}"]`);
    await page.click(`#builds-table a[href="#/templates/${built.templateId}/builds/${built.buildId}"]`);
    await page.waitForFunction((c) => document.getElementById('build-logs')?.textContent?.includes(c), canary, { timeout: 30_000, polling: 500 }).catch(async (e: Error) => {
      await shot('06-build-logs-failed');
      throw new Error(`${e.message}; #build-logs: ${await page.textContent('#build-logs')}`);
    });
    assert.equal(await page.locator('#build-logs img, #build-logs script').count(), 0);
    assert.ok(fetched.some((u) => u.includes(`/builds/${built.buildId}/logs`) && u.includes('cove_grant=') && new URL(u).origin !== new URL(d.env.E2B_API_URL).origin), 'build logs read from the cluster');
    assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
    await shot('06-build-logs');
  });

  test('pause and kill from the list; the cluster view shows health and charts', { timeout: 180_000 }, async () => {
    const d = deployment();
    const id = sbx!.sandboxId;
    await goto(page, `${d.env.E2B_API_URL}/dashboard/#/sandboxes`);
    const row = page.locator('#sandboxes-table tbody tr', { has: page.locator(`a[data-sandbox-id="${id}"]`) });
    await row.getByRole('button', { name: 'Pause' }).click();
    await eventually(async () => ((await sbx!.getInfo()).state === 'paused' ? true : undefined), 60_000, 'the sandbox paused');
    await page.selectOption('#state', 'paused');
    await page.waitForSelector(`a[data-sandbox-id="${id}"]`, { timeout: 15_000 });
    await row.getByRole('button', { name: 'Kill' }).click();
    await page.waitForSelector(`a[data-sandbox-id="${id}"]`, { state: 'detached', timeout: 30_000 });
    await assert.rejects(sbx!.getInfo(), 'the sandbox is gone');
    sbx = undefined;

    await goto(page, `${d.env.E2B_API_URL}/dashboard/#/cluster`);
    const status = (await page.textContent('#cluster-status', { timeout: 15_000 }))!;
    assert.ok(['healthy', 'degraded', 'unknown'].includes(status), status);
    await page.waitForSelector('.charts svg');
    await shot('05-cluster');
    await goto(page, `${d.env.E2B_API_URL}/dashboard/#/templates`);
    await page.waitForSelector('#templates-table');
    await shot('07-templates');

    await page.click('#sign-out');
    await page.waitForSelector('#sign-in');
    const r = await page.evaluate(async () => (await fetch('/dashboard/api/teams', { headers: { 'x-cove-dashboard': '1' } })).status);
    assert.equal(r, 401, 'signed out');
  });
});
