// Issue 13, "URLs work where the user is": every URL the unchanged SDK hands out works on the machine that ran
// `cove up`, the way a user gets there — a shell that sourced the env file (Node trusts the local CA through
// NODE_EXTRA_CA_CERTS, *.localhost resolves through the system resolver) and a browser (headless Chromium, which
// trusts the CA through the NSS database `cove up` added it to; no certificate flag is passed).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { Sandbox } from 'e2b';
import { Agent, request } from 'undici';
import { deployment, E2E_PORT_OFFSET, repoRoot, type Deployment } from './deployment.js';

const run = promisify(execFile);

/**
 * Runs an ES module with the SDK in a fresh Node started from a shell that sourced the env file and nothing
 * else of this process's environment; its last stdout line is its JSON answer.
 */
async function asUser<T>(d: Deployment, script: string): Promise<T> {
  const { stdout } = await run('sh', ['-c', `. "$1" && exec node --input-type=module -e "$2"`, 'sh', d.envFile, script], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    timeout: 120_000,
    maxBuffer: 1 << 20,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as T;
}

/**
 * Starts a server in the sandbox that outlives the short-lived client which started it (its own session, no pipe
 * back to envd), then waits inside the sandbox until it answers, so the test never sleeps.
 */
const SERVE = (port: number) => `
  await sbx.files.write('/home/user/site/index.html', '<html><body><p id="m">hello-' + sbx.sandboxId + '</p></body></html>');
  await sbx.commands.run('cd /home/user/site && (setsid python3 -m http.server ${port} </dev/null >/dev/null 2>&1 &)');
  await sbx.commands.run('for i in $(seq 100); do python3 -c "import urllib.request; urllib.request.urlopen(\\'http://127.0.0.1:${port}/\\')" 2>/dev/null && exit 0; sleep 0.1; done; exit 1');
`;

describe('sandbox URLs from the machine that ran cove up', { timeout: 300_000 }, () => {
  let d: Deployment;
  let ca: Buffer;
  const made: string[] = [];

  before(() => {
    d = deployment();
    ca = readFileSync(d.env.NODE_EXTRA_CA_CERTS);
  });

  after(async () => {
    for (const id of made) await Sandbox.kill(id).catch(() => undefined);
  });

  test('the env file names the TLS domain and the CA, not a sandbox URL', () => {
    const text = readFileSync(d.envFile, 'utf8');
    assert.doesNotMatch(text, /E2B_SANDBOX_URL/);
    assert.equal(d.env.E2B_DOMAIN, `cove.localhost:${d.ports.edgeTrafficTls}`);
  });

  test('getHost over https, signed upload and download URLs: fetch from a Node that sourced the env file', async () => {
    const out = await asUser<{
      id: string;
      host: string;
      page: { status: number; text: string };
      envdUrl: string;
      upload: { status: number };
      download: { status: number; text: string };
      unsigned: { status: number; body: string };
      forged: { status: number; type: string; body: string };
      expired: { status: number; type: string; body: string };
      otherPath: { status: number };
      otherSandbox: { status: number };
      mcp: { url: string; status: number; body: string };
    }>(
      d,
      `
      import { Sandbox } from 'e2b';
      const sbx = await Sandbox.create({ timeoutMs: 180_000 });
      const other = await Sandbox.create({ timeoutMs: 60_000 });
      ${SERVE(8000)}
      const page = await fetch('https://' + sbx.getHost(8000) + '/index.html');
      const form = new FormData();
      form.append('file', new Blob(['uploaded-through-a-signed-url']), 'u.txt');
      const up = await fetch(await sbx.uploadUrl('/home/user/u.txt', { useSignatureExpiration: 120 }), { method: 'POST', body: form });
      const dl = await fetch(await sbx.downloadUrl('/home/user/u.txt', { useSignatureExpiration: 120 }));
      const signed = new URL(await sbx.downloadUrl('/home/user/u.txt', { useSignatureExpiration: 120 }));
      const j = async (r) => ({ status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() });
      const unsignedUrl = new URL(signed); unsignedUrl.searchParams.delete('signature'); unsignedUrl.searchParams.delete('signature_expiration');
      const forgedUrl = new URL(signed); forgedUrl.searchParams.set('signature', 'v1_' + 'A'.repeat(43));
      const expired = await fetch(await sbx.downloadUrl('/home/user/u.txt', { useSignatureExpiration: -60 }));
      // A signature for one path does not open another, and one sandbox's signature does not open another sandbox.
      const otherPathUrl = new URL(signed); otherPathUrl.searchParams.set('path', '/etc/shadow');
      const otherSandboxUrl = new URL(signed); otherSandboxUrl.host = other.getHost(49983);
      const otherPath = await fetch(otherPathUrl); await otherPath.text();
      const otherSandbox = await fetch(otherSandboxUrl); await otherSandbox.text();
      await other.kill();
      // The MCP URL has the same shape: TLS and routing reach the sandbox (no gateway listens there: the edge's JSON 502).
      const mcpRes = await fetch(sbx.getMcpUrl(), { method: 'POST' });
      const mcp = { url: sbx.getMcpUrl(), status: mcpRes.status, body: await mcpRes.text() };
      console.log(JSON.stringify({
        id: sbx.sandboxId, host: sbx.getHost(8000), envdUrl: signed.origin,
        page: { status: page.status, text: await page.text() },
        upload: { status: up.status, body: await up.text() },
        download: { status: dl.status, text: await dl.text() },
        unsigned: await j(await fetch(unsignedUrl)),
        forged: await j(await fetch(forgedUrl)),
        expired: await j(expired),
        otherPath: { status: otherPath.status },
        otherSandbox: { status: otherSandbox.status },
        mcp,
      }));
      process.exit(0);
      `,
    );
    made.push(out.id);
    assert.equal(out.host, `8000-${out.id}.${d.env.E2B_DOMAIN}`);
    assert.equal(out.page.status, 200);
    assert.match(out.page.text, new RegExp(`hello-${out.id}`));
    // The file URLs name the sandbox in the Host (they answered 400 "Missing E2b-Sandbox-Id" with E2B_SANDBOX_URL).
    assert.equal(out.envdUrl, `https://49983-${out.id}.${d.env.E2B_DOMAIN}`);
    assert.equal(out.upload.status, 200);
    assert.deepEqual(out.download, { status: 200, text: 'uploaded-through-a-signed-url' });
    assert.equal(out.unsigned.status, 401);
    for (const [name, r] of [['forged', out.forged], ['expired', out.expired]] as const) {
      assert.equal(r.status, 401, name);
      assert.match(r.type, /application\/json/, name);
      const body = JSON.parse(r.body) as { code: number; message: string };
      assert.equal(body.code, 401, name);
      assert.ok(body.message.length > 0, name);
    }
    assert.match(JSON.parse(out.expired.body).message, /expired/);
    assert.equal(out.otherPath.status, 401);
    assert.equal(out.otherSandbox.status, 401);
    assert.equal(out.mcp.url, `https://50005-${out.id}.${d.env.E2B_DOMAIN}/mcp`);
    assert.equal(out.mcp.status, 502);
    assert.deepEqual(JSON.parse(out.mcp.body), { message: 'The sandbox is running but port is not open', sandboxId: out.id, port: 50005, code: 502 });
  });

  test('headless Chromium opens https://<port>-<id>.<domain>/ of a sandbox server, whose page fetches a signed download URL; it trusts the local CA', async () => {
    const out = await asUser<{ id: string; host: string }>(
      d,
      `
      import { Sandbox } from 'e2b';
      const sbx = await Sandbox.create({ timeoutMs: 120_000 });
      ${SERVE(8080)}
      await sbx.files.write('/home/user/note.txt', 'fetched-by-the-page-' + sbx.sandboxId);
      const download = await sbx.downloadUrl('/home/user/note.txt', { useSignatureExpiration: 300 });
      // A web app's use of a signed URL: a page on one sandbox origin fetches it from envd's (cross-origin, CORS).
      await sbx.files.write('/home/user/site/dl.html', '<html><body><p id="d">waiting</p><script>fetch(' + JSON.stringify(download) +
        ').then((r) => r.text()).then((t) => { document.getElementById("d").textContent = t; }, (e) => { document.getElementById("d").textContent = "failed " + e; });</script></body></html>');
      console.log(JSON.stringify({ id: sbx.sandboxId, host: sbx.getHost(8080) }));
      process.exit(0);
      `,
    );
    made.push(out.id);
    // No --ignore-certificate-errors: a certificate Chromium does not trust gives its error page, not the DOM.
    // The virtual-time budget lets the page's fetch finish before the DOM is printed.
    // A fresh profile per page: nothing of another run (a profile lock, a cached page or certificate) decides it.
    // Chromium drops a load with ERR_NETWORK_CHANGED when an address appears on the host, which every sandbox the
    // warm pools start meanwhile does (its veth); a browser's user reloads then, and so does this, at most twice.
    const browse = async (url: string, attempt = 1): Promise<{ dom: string; log: string }> => {
      const r = await browseOnce(url);
      return attempt < 3 && r.dom === '' && /ERR_NETWORK_CHANGED/.test(r.log) ? browse(url, attempt + 1) : r;
    };
    const browseOnce = async (url: string): Promise<{ dom: string; log: string }> => {
      const profile = mkdtempSync(join(tmpdir(), 'cove-e2e-chromium-'));
      try {
        const r = await run('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', `--user-data-dir=${profile}`, '--virtual-time-budget=15000', '--dump-dom', url], {
          timeout: 90_000,
          maxBuffer: 4 << 20,
        });
        return { dom: r.stdout, log: r.stderr.split('\n').filter((l) => !/dbus|unexpected operator/.test(l)).slice(-10).join('\n') };
      } finally {
        rmSync(profile, { recursive: true, force: true });
      }
    };
    const page = await browse(`https://${out.host}/`);
    assert.match(page.dom, new RegExp(`<p id="m">hello-${out.id}</p>`), page.log);
    const dl = await browse(`https://${out.host}/dl.html`);
    assert.match(dl.dom, new RegExp(`<p id="d">fetched-by-the-page-${out.id}</p>`), dl.log);
  });

  test('@e2b/code-interpreter runs code over https from a Node that sourced the env file', async () => {
    const out = await asUser<{ id: string; text: string; url: string }>(
      d,
      `
      import { Sandbox } from '@e2b/code-interpreter';
      const sbx = await Sandbox.create({ timeoutMs: 120_000 });
      const exec = await sbx.runCode('6 * 7');
      console.log(JSON.stringify({ id: sbx.sandboxId, text: exec.text ?? '', url: sbx.jupyterUrl }));
      await sbx.kill();
      process.exit(0);
      `,
    );
    assert.equal(out.text, '42');
    assert.equal(out.url, `https://49999-${out.id}.${d.env.E2B_DOMAIN}`);
  });

  test('a second cove up keeps the CA and the served certificate; a running sandbox URL keeps working', async () => {
    const tlsDir = join(d.stateDir, 'tls');
    const before = Object.fromEntries(['ca.pem', 'ca-key.pem', 'traffic.pem'].map((f) => [f, readFileSync(join(tlsDir, f), 'utf8')]));
    const out = await asUser<{ id: string; host: string }>(
      d,
      `
      import { Sandbox } from 'e2b';
      const sbx = await Sandbox.create({ timeoutMs: 120_000 });
      ${SERVE(8080)}
      console.log(JSON.stringify({ id: sbx.sandboxId, host: sbx.getHost(8080) }));
      process.exit(0);
      `,
    );
    made.push(out.id);
    // As registered by a Cove from before these URLs: the re-run must move the domain, not fail on a conflict.
    const clusterId = (JSON.parse(readFileSync(join(d.stateDir, 'state.json'), 'utf8')) as { clusterId: string }).clusterId;
    const admin = (method: 'GET' | 'PATCH', body?: unknown) =>
      request(`${d.env.E2B_API_URL}/admin/clusters/${clusterId}`, {
        method,
        headers: { 'x-admin-token': d.secrets.adminToken, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    const old = await admin('PATCH', { sandboxDomain: 'sandbox.cove.internal' });
    assert.equal(old.statusCode, 200, await old.body.text());
    await run(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--state-dir', d.stateDir, '--port-offset', String(E2E_PORT_OFFSET), '--nodes', String(d.nodes.length), '--code-interpreter-wait', '0'], {
      timeout: 120_000,
      maxBuffer: 4 << 20,
    });
    for (const [f, text] of Object.entries(before)) assert.equal(readFileSync(join(tlsDir, f), 'utf8'), text, f);
    const now = await admin('GET');
    assert.equal(((await now.body.json()) as { sandboxDomain: string }).sandboxDomain, d.env.E2B_DOMAIN);
    const agent = new Agent({ connect: { ca } });
    try {
      const r = await request(`https://${out.host}/`, { dispatcher: agent });
      assert.equal(r.statusCode, 200);
      assert.match(await r.body.text(), new RegExp(`hello-${out.id}`));
    } finally {
      await agent.close();
    }
  });

  test('bad Host headers on the TLS traffic port get a clear JSON error', async () => {
    // These Hosts are no names the certificate covers; the check here is the edge's answer to them, not TLS.
    const agent = new Agent({ connect: { ca, servername: 'x.cove.localhost', checkServerIdentity: () => undefined } });
    try {
      for (const host of ['evil.example', 'cove.localhost', 'nonsense.cove.localhost', '99999-abc.cove.localhost', '8000-ABC!.cove.localhost', `8000-abc.sub.cove.localhost`, 'x'.repeat(300)]) {
        const r = await request(`https://127.0.0.1:${d.ports.edgeTrafficTls}/`, { dispatcher: agent, headers: { host } });
        assert.equal(r.statusCode, 400, host);
        assert.match(String(r.headers['content-type']), /application\/json/, host);
        const body = (await r.body.json()) as { code: number; message: string };
        assert.equal(body.code, 400, host);
        assert.ok(body.message.length > 0, host);
      }
      // A well-formed name of a sandbox that does not exist: 502 with the SDK's JSON, not a hang or a TLS error.
      const r = await request(`https://127.0.0.1:${d.ports.edgeTrafficTls}/`, { dispatcher: agent, headers: { host: `8000-doesnotexist0.${d.env.E2B_DOMAIN}` } });
      assert.ok([404, 502].includes(r.statusCode), String(r.statusCode));
      assert.match(String(r.headers['content-type']), /application\/json/);
      await r.body.dump();
    } finally {
      await agent.close();
    }
  });

  test('the traffic certificate is from the local CA, covers only the sandbox domain, and the CA cannot vouch for other names', async () => {
    const socket: TLSSocket = await new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: d.ports.edgeTrafficTls, servername: `8000-abc.cove.localhost`, ca }, () => resolve(s));
      s.once('error', reject);
    });
    try {
      assert.equal(socket.authorized, true, String(socket.authorizationError));
      const cert = socket.getPeerX509Certificate()!;
      assert.ok(cert.checkHost('8000-abc.cove.localhost'));
      assert.equal(cert.checkHost('example.com'), undefined);
    } finally {
      socket.destroy();
    }
    // The CA's key is the deployment's alone, and even with it nothing outside the sandbox domain verifies: a
    // certificate it signs for another name fails OpenSSL's check (name constraints), as it does in browsers.
    const caKey = join(d.stateDir, 'tls', 'ca-key.pem');
    const caCert = join(d.stateDir, 'tls', 'ca.pem');
    assert.equal(statSync(caKey).mode & 0o777, 0o600);
    const dir = mkdtempSync(join(tmpdir(), 'cove-ca-abuse-'));
    try {
      const forged = join(dir, 'forged.pem');
      await run('openssl', ['req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', forged,
        '-CA', caCert, '-CAkey', caKey, '-days', '1', '-subj', '/CN=example.com', '-addext', 'subjectAltName=DNS:example.com']);
      const inside = join(dir, 'inside.pem');
      await run('openssl', ['req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k2.pem'), '-out', inside,
        '-CA', caCert, '-CAkey', caKey, '-days', '1', '-subj', '/CN=x.cove.localhost', '-addext', 'subjectAltName=DNS:x.cove.localhost']);
      // The control: the same CA's certificate for a name inside the domain verifies, so the refusal below is the constraint's.
      await run('openssl', ['verify', '-CAfile', caCert, inside]);
      await assert.rejects(run('openssl', ['verify', '-CAfile', caCert, forged]), (err: { stdout?: string; stderr?: string }) =>
        /permitted subtree violation/.test(`${err.stdout}${err.stderr}`),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
