// The stand-in internet of the rules and secrets e2e tests (issue 12): a network namespace holding 203.0.113.10
// (example.test) and .11 (other.test) with HTTP :80 and HTTPS :443 servers that record every request's headers (and
// answer without them), and a resolver on 203.0.113.53; plus the in-sandbox fetch helper. Never an address outside
// the machine. Needs root.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sandbox } from 'e2b';
import { E2E_EGRESS_DNS } from './deployment.js';

export const WEB1 = '203.0.113.10';
export const WEB2 = '203.0.113.11';
const HOST_LINK = '198.51.100.253';
const NS_LINK = '198.51.100.254';
const ZONE: Record<string, string> = { 'example.test': WEB1, 'other.test': WEB2 };

function sh(...args: string[]): void {
  execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}
function quiet(...args: string[]): void {
  try {
    sh(...args);
  } catch {
    /* already gone */
  }
}

/** One request as the stand-in server saw it. */
export interface Seen {
  tls: boolean;
  sni: string | null;
  host: string;
  headers: Record<string, string | string[]>;
}

export class StandIn {
  readonly ns: string;
  readonly hostIf: string;
  readonly seen: Seen[] = [];
  private readonly children: ChildProcess[] = [];
  private dir: string | undefined;

  constructor(tag: string) {
    this.ns = `covenr-${tag}`;
    this.hostIf = `covenr${tag.slice(0, 6)}`;
  }

  private async spawnReady(args: string[], env: Record<string, string>, onLine: (line: string) => void): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    this.children.push(child);
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line === 'ready') resolve();
          else onLine(line);
        }
      });
      child.once('exit', (code) => reject(new Error(`stand-in ${args[0]} exited ${code}`)));
    });
  }

  /** A CA and a certificate for the zone's names; the CA goes where the nodes read extra upstream CAs. */
  private pki(caFile: string): { cert: string; key: string } {
    const dir = (this.dir = mkdtempSync(join(tmpdir(), 'cove-rules-pki-')));
    const o = (...a: string[]): void => void execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    o('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=stand-in CA',
      '-keyout', 'ca.key', '-out', 'ca.pem', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    o('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=example.test', '-keyout', 'srv.key', '-out', 'srv.csr');
    writeFileSync(join(dir, 'srv.ext'), 'subjectAltName=DNS:example.test,DNS:other.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
    o('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'srv.pem', '-extfile', 'srv.ext');
    writeFileSync(caFile, readFileSync(join(dir, 'ca.pem')));
    return { cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') };
  }

  async start(caFile: string): Promise<void> {
    this.remove();
    process.once('exit', () => this.remove());
    const { cert, key } = this.pki(caFile);
    sh('ip', 'netns', 'add', this.ns);
    sh('ip', 'link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', 'nr0', 'netns', this.ns);
    sh('ip', 'addr', 'add', `${HOST_LINK}/30`, 'dev', this.hostIf);
    sh('ip', 'link', 'set', this.hostIf, 'up');
    const x = (...a: string[]): void => sh('ip', '-n', this.ns, ...a);
    x('link', 'set', 'lo', 'up');
    x('addr', 'add', `${NS_LINK}/30`, 'dev', 'nr0');
    x('link', 'set', 'nr0', 'up');
    for (const a of [WEB1, WEB2, E2E_EGRESS_DNS]) x('addr', 'add', `${a}/32`, 'dev', 'lo');
    x('route', 'add', 'default', 'via', HOST_LINK);
    sh('ip', 'route', 'replace', '203.0.113.0/24', 'via', NS_LINK, 'dev', this.hostIf);
    // The servers log what they received (the test's view of "the upstream") and answer without echoing
    // headers: an echo would hand the injected secret back to the sandbox.
    const script = `const fs = require('node:fs');
const chunk = Buffer.alloc(1 << 20, 120);
// /bytes/<n>: n bytes, unlogged (the egress bench's downloads).
const bytes = (n, r) => { r.writeHead(200, { 'content-length': n }); let left = n; const w = () => { while (left > 0) { const c = left >= chunk.length ? chunk : chunk.subarray(0, left); left -= c.length; if (!r.write(c)) return void r.once('drain', w); } r.end(); }; w(); };
const h = (q, r) => { if (q.url.startsWith('/bytes/')) return bytes(Math.min(Number(q.url.slice(7)) || 0, 1 << 30), r); console.log(JSON.stringify({ tls: !!q.socket.encrypted, sni: q.socket.servername || null, host: q.headers.host, headers: q.headers })); r.end('ok ' + q.headers.host); };
require('node:http').createServer(h).listen(80, '0.0.0.0');
require('node:http').createServer(h).listen(8080, '0.0.0.0');
require('node:https').createServer({ cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY) }, h).listen(443, '0.0.0.0', () => console.log('ready'));`;
    await this.spawnReady(['-e', script], { CERT: cert, KEY: key }, (line) => this.seen.push(JSON.parse(line) as Seen));
    const dnsMain = fileURLToPath(import.meta.resolve('@cove/test-support/stand-in-dns-main'));
    await this.spawnReady([dnsMain, E2E_EGRESS_DNS, ...Object.entries(ZONE).map(([n, ip]) => `${n}=${ip}`)], {}, () => undefined);
  }

  remove(): void {
    for (const c of this.children.splice(0)) c.kill('SIGKILL');
    quiet('ip', 'route', 'del', '203.0.113.0/24', 'via', NS_LINK);
    quiet('ip', 'link', 'del', this.hostIf);
    quiet('ip', 'netns', 'del', this.ns);
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}

/**
 * In-sandbox fetches, one python process: `get` uses the default (verifying) TLS context, so it works only if the
 * sandbox trusts the egress CA; `mismatch` opens TLS for one name (SNI) and asks for another (Host).
 */
const FETCH_PY = `import sys, json, socket, ssl, urllib.request
def get(url, hdrs):
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, headers=hdrs), timeout=5)
        return str(r.status) + " " + r.read().decode()
    except urllib.error.HTTPError as e:
        return str(e.code) + " " + e.read().decode()
    except Exception as e:
        return "failed:" + type(e).__name__ + ":" + str(e)[:200]
def mismatch(sni, host):
    try:
        t = ssl.create_default_context().wrap_socket(socket.create_connection((sni, 443), timeout=5), server_hostname=sni)
        t.sendall(("GET / HTTP/1.1\\r\\nHost: " + host + "\\r\\nConnection: close\\r\\n\\r\\n").encode())
        data = b""
        while True:
            d = t.recv(4096)
            if not d:
                break
            data += d
        return data.split(b"\\r\\n", 1)[0].decode()
    except Exception as e:
        return "failed:" + type(e).__name__
out = []
for p in json.loads(sys.argv[1]):
    out.append({"get": get, "mismatch": mismatch}[p[0]](*p[1:]))
print(json.dumps(out))
`;

export async function fetches(sbx: Sandbox, list: unknown[][]): Promise<string[]> {
  await sbx.files.write('/tmp/nr_fetch.py', FETCH_PY);
  const r = await sbx.commands.run(`python3 /tmp/nr_fetch.py '${JSON.stringify(list)}'`, { timeoutMs: 60_000 });
  return JSON.parse(r.stdout.trim()) as string[];
}

export function header(s: Seen, name: string): string | undefined {
  const v = s.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

