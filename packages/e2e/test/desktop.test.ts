// Issue 18 proof: the unchanged @e2b/desktop 2.4.0 against a real deployment — template `desktop` (Xvfb, Xfce,
// xdotool, scrot, x11vnc, noVNC), pre-started in the warm pool so the first screenshot does not wait for X; the
// resolution and dpi the SDK passes honoured; mouse, keyboard, scroll and drag land; the noVNC stream is served
// through the edge; and a desktop sandbox gives its tenant nothing a base one does not. The nodes build the
// template in the background after code-interpreter-v1: this file waits for it (`cove test` does not).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'undici';
import { Sandbox } from '@e2b/desktop';
import { Sandbox as BaseSandbox } from 'e2b';
import { deployment, eventually } from './deployment.js';
import { desktopReady, pngSize, run, stopStream } from './desktop-helpers.js';

describe('computer use through the unchanged @e2b/desktop SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const made: BaseSandbox[] = [];
  let desktop: Sandbox;
  let createMs = 0;
  let firstShot: Uint8Array;

  before(async () => {
    deployment();
    await desktopReady(true);
    const t0 = Date.now();
    desktop = await Sandbox.create({ timeoutMs: 600_000, metadata: { suite: tag } });
    made.push(desktop);
    firstShot = await desktop.screenshot();
    createMs = Date.now() - t0;
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  test('create gives a running desktop: the first screenshot is a PNG of the default size, without waiting for X', async (t) => {
    t.diagnostic(`create → first screenshot: ${createMs} ms`);
    assert.deepEqual(pngSize(firstShot), { width: 1024, height: 768 });
    // A warm slot already runs Xvfb and Xfce (the template's start command); a create that boots a slot and starts
    // them took 7.6 s here, so this bound fails when the desktop is not pre-started.
    assert.ok(createMs < 3_000, `create → first screenshot took ${createMs} ms`);
    assert.deepEqual(await desktop.getScreenSize(), { width: 1024, height: 768 });
    const procs = await run(desktop, 'ps -o user=,comm= -C Xvfb,xfce4-session,xfwm4,xfdesktop');
    const lines = procs.out.trim().split('\n').map((l) => l.trim().split(/\s+/));
    assert.deepEqual([...new Set(lines.map((l) => l[1]))].sort(), ['Xvfb', 'xfce4-session', 'xfdesktop', 'xfwm4']);
    assert.ok(lines.every((l) => l[0] === 'user'), `the desktop runs as the sandbox's user: ${procs.out}`);
    // One session, not the pre-started one plus the SDK's own.
    assert.equal(lines.filter((l) => l[1] === 'xfce4-session').length, 1, procs.out);
    assert.equal(lines.filter((l) => l[1] === 'Xvfb').length, 1, procs.out);
  });

  test('the resolution and dpi the SDK passes are honoured', async () => {
    const other = await Sandbox.create({ timeoutMs: 300_000, resolution: [800, 600], dpi: 120, metadata: { suite: tag } });
    made.push(other);
    assert.deepEqual(await other.getScreenSize(), { width: 800, height: 600 });
    assert.deepEqual(pngSize(await other.screenshot()), { width: 800, height: 600 });
    assert.match((await other.commands.run('xdpyinfo | grep resolution')).stdout, /120x120 dots per inch/);
    const procs = await run(other, 'pgrep -c -x xfce4-session; pgrep -c -x Xvfb');
    assert.deepEqual(procs.out.trim().split('\n'), ['1', '1'], 'the pre-started desktop was replaced, not doubled');
    await other.kill();
  });

  test('moveMouse then getCursorPosition', async () => {
    await desktop.moveMouse(123, 234);
    assert.deepEqual(await desktop.getCursorPosition(), { x: 123, y: 234 });
    await desktop.moveMouse(900, 700);
    assert.deepEqual(await desktop.getCursorPosition(), { x: 900, y: 700 });
  });

  test('type into a text editor, save with ctrl+s and read the file back', async () => {
    const file = `/home/user/note-${tag}.txt`;
    await desktop.files.write(file, '');
    await (await desktop.commands.run(`mousepad ${file}`, { background: true })).disconnect();
    const win = await eventually(async () => (await desktop.getApplicationWindows('mousepad')).find((w) => /^\d+$/.test(w)), 30_000, 'a mousepad window');
    assert.match(await desktop.getWindowTitle(win), new RegExp(`note-${tag}`));
    await desktop.commands.run(`xdotool windowactivate --sync ${win}`);
    await eventually(async () => (await desktop.getCurrentWindowId()) === win, 10_000, 'mousepad focused');
    await desktop.write('hello from cove', { chunkSize: 25, delayInMs: 10 });
    await desktop.press('enter');
    await desktop.write("second line, with 'quotes' & $signs", { chunkSize: 25, delayInMs: 10 });
    await desktop.press(['ctrl', 's']);
    const text = await eventually(async () => {
      const t = await desktop.files.read(file);
      return t.includes('$signs') ? t : undefined;
    }, 15_000, 'the saved file');
    assert.equal(text.trimEnd(), "hello from cove\nsecond line, with 'quotes' & $signs");
    await desktop.press(['ctrl', 'q']);
  });

  test('scroll and drag land as X pointer events', async () => {
    // xev (x11-utils) opens its own window and prints the events it receives: what the SDK's xdotool calls did.
    const log = `/tmp/xev-${tag}.log`;
    await (await desktop.commands.run(`xev -geometry 400x300+100+100 -event button >${log} 2>&1`, { background: true })).disconnect();
    const win = await eventually(async () => {
      const r = await run(desktop, 'xdotool search --onlyvisible --name "^Event Tester$"');
      return r.code === 0 ? r.out.trim().split('\n')[0] : undefined;
    }, 15_000, 'the xev window');
    const geo = (await desktop.commands.run(`xdotool getwindowgeometry --shell ${win}`)).stdout;
    const x = Number(/X=(\d+)/.exec(geo)![1]);
    const y = Number(/Y=(\d+)/.exec(geo)![1]);
    await desktop.moveMouse(x + 200, y + 150);
    await desktop.scroll('down', 3);
    await desktop.scroll('up', 2);
    await desktop.drag([x + 50, y + 50], [x + 300, y + 200]);
    const events = await eventually(async () => {
      const t = await desktop.files.read(log);
      return (t.match(/ButtonRelease/g) ?? []).length >= 6 ? t : undefined;
    }, 10_000, 'six button releases in the xev log');
    const buttons = [...events.matchAll(/ButtonPress event[^]*?\(([-\d]+),([-\d]+)\)[^]*?button (\d+)/g)].map((m) => ({ x: Number(m[1]), y: Number(m[2]), button: Number(m[3]) }));
    assert.deepEqual(buttons.map((b) => b.button), [5, 5, 5, 4, 4, 1], events.slice(0, 2000));
    // The drag: button 1 pressed at its start and released at its end, inside the window (xev reports window
    // coordinates; the frame's decorations offset them from the screen's, so the distance is what is compared).
    const release = [...events.matchAll(/ButtonRelease event[^]*?\(([-\d]+),([-\d]+)\)[^]*?button (\d+)/g)].at(-1)!;
    const press = buttons[5]!;
    assert.equal(Number(release[3]), 1);
    assert.deepEqual([Number(release[1]) - press.x, Number(release[2]) - press.y], [250, 150], events.slice(-1500));
    assert.ok(press.x >= 0 && press.y >= 0 && press.x < 400 && press.y < 300, `pressed inside the window: ${press.x},${press.y}`);
    await run(desktop, 'pkill -x xev');
  });

  test('press: single keys and combinations reach the focused window', async () => {
    const file = `/home/user/keys-${tag}.txt`;
    await desktop.files.write(file, '');
    await (await desktop.commands.run(`mousepad ${file}`, { background: true })).disconnect();
    const win = await eventually(async () => (await desktop.getApplicationWindows('mousepad')).find((w) => /^\d+$/.test(w)), 30_000, 'a mousepad window');
    await desktop.commands.run(`xdotool windowactivate --sync ${win}`);
    await desktop.write('abc');
    await desktop.press('backspace');
    await desktop.press('home');
    await desktop.press(['shift', 'end']);
    await desktop.write('XY');
    await desktop.press(['ctrl', 's']);
    assert.equal((await eventually(async () => (await desktop.files.read(file)).trim() || undefined, 15_000, 'the saved file')), 'XY');
    await desktop.press(['ctrl', 'q']);
  });

  test('open() shows a URL, then a local file, in the browser (Firefox ESR through xdg-open); its window is found by class, then title', async () => {
    const title = `cove-page-${tag}`;
    await desktop.files.write(`/home/user/www/${title}.html`, `<!doctype html><title>${title}</title><h1>${title}</h1>`);
    await (await desktop.commands.run('cd /home/user/www && python3 -m http.server 8000 --bind 127.0.0.1', { background: true })).disconnect();
    await eventually(async () => (await run(desktop, `curl -sf http://127.0.0.1:8000/${title}.html`)).code === 0, 15_000, 'the page served');
    await desktop.open(`http://127.0.0.1:8000/${title}.html`);
    // Found as an agent would, with the SDK's own calls: the browser's windows by class, then their titles.
    const win = await eventually(async () => {
      for (const w of (await desktop.getApplicationWindows('firefox-esr').catch(() => [])).filter((x) => /^\d+$/.test(x))) {
        if ((await desktop.getWindowTitle(w).catch(() => '')).includes(title)) return w;
      }
      return undefined;
    }, 60_000, 'the browser window with the page title').catch(async (err: Error) => {
      const seen = await run(desktop, 'ps -eo args | grep -c [f]irefox; xdotool search --onlyvisible --name . getwindowname %@');
      throw new Error(`${err.message}; firefox processes and windows: ${seen.out}`);
    });
    assert.match(await desktop.getWindowTitle(win), new RegExp(`^${title} — Mozilla Firefox$`));
    // A local file by path: exo-open asks GIO for the file type's application, which needs the template's
    // /usr/share/applications/mimeinfo.cache (desktop-file-utils); without it nothing opened (exo-open exit 1).
    const local = `cove-local-${tag}`;
    await desktop.files.write(`/home/user/${local}.html`, `<!doctype html><title>${local}</title><h1>${local}</h1>`);
    await desktop.open(`/home/user/${local}.html`);
    await eventually(async () => {
      for (const w of (await desktop.getApplicationWindows('firefox-esr').catch(() => [])).filter((x) => /^\d+$/.test(x))) {
        if ((await desktop.getWindowTitle(w).catch(() => '')).startsWith(`${local} — `)) return w;
      }
      return undefined;
    }, 60_000, 'the browser showing the local file');
    await run(desktop, 'pkill -x firefox-esr; pkill -f "http.server 8000"');
  });

  test('pause keeps the desktop session: the same X server, the open editor and its unsaved text', async (t) => {
    // This check is about the editor: the browser the open() test above leaves running (started as
    // /usr/bin/x-www-browser, which `pkill -x firefox-esr` misses; found here by executable) goes first, which keeps
    // the pause small. desktop-pause.test.ts pauses with Firefox open.
    const browsers = 'for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in /usr/lib/firefox-esr/*) echo ${p#/proc/};; esac; done';
    await eventually(async () => {
      // As its user: root in the sandbox may not read another user's /proc/<pid>/exe (no CAP_SYS_PTRACE).
      const left = (await run(desktop, browsers)).out.trim();
      if (!left) return true;
      await run(desktop, `kill -9 ${left.split('\n').join(' ')}`);
      return undefined;
    }, 15_000, 'the browser gone');
    const file = `/home/user/paused-${tag}.txt`;
    await desktop.files.write(file, '');
    await (await desktop.commands.run(`mousepad ${file}`, { background: true })).disconnect();
    const win = await eventually(async () => (await desktop.getApplicationWindows('mousepad')).find((w) => /^\d+$/.test(w)), 30_000, 'a mousepad window');
    await desktop.commands.run(`xdotool windowactivate --sync ${win}`);
    await desktop.write('typed before the pause');
    const xvfb = (await desktop.commands.run('pgrep -x Xvfb')).stdout.trim();
    // What made this pause fail before: the desktop's GLib programs hold inotify watches on the slot's overlay
    // (CRIU names them by scanning the sandbox's root mount, on by default, confined by criu patch 3), and its
    // session bus and ICE listener are path-bound unix sockets in process groups whose leaders exited (criu patch
    // 4). docs/desktop.md, "Pause"; desktop-pause.test.ts holds the round trips to the other node.
    const watchers = await run(desktop, 'for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q anon_inode:inotify && cat $p/comm; done | sort | uniq -c | tr -s " \\n" " "');
    t.diagnostic(`processes holding inotify: ${watchers.out}`);
    assert.equal(await desktop.pause(), true);
    const sbx = await Sandbox.connect(desktop.sandboxId, { timeoutMs: 600_000 });
    desktop = sbx;
    assert.equal((await sbx.files.read(file)).trim(), '', 'the text was never saved: it came back in the editor\'s memory');
    assert.equal((await sbx.getInfo()).state, 'running');
    assert.equal((await sbx.commands.run('pgrep -x Xvfb')).stdout.trim(), xvfb, 'the same X server, not a new one');
    assert.deepEqual(pngSize(await sbx.screenshot()), { width: 1024, height: 768 });
    assert.ok((await sbx.getApplicationWindows('mousepad')).includes(win), 'the editor window is still open');
    await sbx.commands.run(`xdotool windowactivate --sync ${win}`);
    await sbx.press(['ctrl', 's']);
    assert.equal(await eventually(async () => (await sbx.files.read(file)).trim() || undefined, 15_000, 'the saved file'), 'typed before the pause');
    await sbx.press(['ctrl', 'q']);
  });

  test('stream.start(): noVNC serves through the edge; with requireAuth the URL carries the password', async () => {
    await desktop.stream.start();
    const url = new URL(desktop.stream.getUrl());
    assert.equal(url.pathname, '/vnc.html');
    assert.equal(url.host, desktop.getHost(6080)); // the domain may carry a port (cove.localhost:<tls port>)
    assert.equal(url.searchParams.get('autoconnect'), 'true');
    // The page and noVNC's own script, through the edge as the SDK reaches any port (E2B_SANDBOX_URL mode).
    const base = process.env.E2B_SANDBOX_URL!;
    const get = (path: string) =>
      fetch(`${base}${path}`, { headers: { 'E2b-Sandbox-Id': desktop.sandboxId, 'E2b-Sandbox-Port': '6080' } });
    const page = await get('/vnc.html');
    assert.equal(page.status, 200);
    assert.match(await page.text(), /noVNC/);
    assert.equal((await get('/app/ui.js')).status, 200);
    const vnc = await run(desktop, 'ps -o user= -C x11vnc');
    assert.equal(vnc.out.trim(), 'user', 'x11vnc runs as the sandbox user');
    await stopStream(desktop);
    await desktop.stream.start({ requireAuth: true });
    const key = desktop.stream.getAuthKey();
    assert.equal(new URL(desktop.stream.getUrl({ authKey: key })).searchParams.get('password'), key);
    assert.match((await desktop.commands.run('ps -o args= -C x11vnc')).stdout, /-usepw/);
    await stopStream(desktop);
  });

  test('stream.stop() ends a server that ignores its SIGTERM (x11vnc can deadlock in its handler); start() works again', async () => {
    await desktop.stream.start();
    // A stopped process cannot run its SIGTERM handler: the same outcome as x11vnc stuck in it, made certain.
    assert.equal((await run(desktop, 'pkill -STOP -x x11vnc-server')).code, 0, 'the server found and frozen');
    const t0 = Date.now();
    await stopStream(desktop);
    const gone = Date.now() - t0;
    assert.ok(gone < 10_000, `gone in ${gone} ms`);
    assert.notEqual((await run(desktop, 'pgrep -f x11vnc')).code, 0, 'nothing of the stream is left');
    await desktop.stream.start();
    assert.equal((await fetch(`${process.env.E2B_SANDBOX_URL!}/vnc.html`, { headers: { 'E2b-Sandbox-Id': desktop.sandboxId, 'E2b-Sandbox-Port': '6080' } })).status, 200);
    await stopStream(desktop);
  });
});

const CHROMIUM = '/usr/bin/chromium';

/**
 * A headless Chromium driven over the DevTools protocol. The page it loads is the sandbox's (hostile) noVNC, so it
 * runs as `nobody` with Chromium's own sandbox on, never as root with --no-sandbox. `*.<domain>` resolves to the
 * edge's traffic port, as a wildcard DNS record would.
 */
async function headlessChromium(domain: string, trafficPort: number) {
  const profile = mkdtempSync(join(tmpdir(), 'cove-chromium-'));
  chownSync(profile, 65534, 65534);
  const proc: ChildProcess = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', CHROMIUM,
    '--headless=new', '--disable-gpu', '--no-first-run', '--window-size=1024,800', `--user-data-dir=${profile}`,
    '--remote-debugging-port=0', `--host-resolver-rules=MAP *.${domain} 127.0.0.1:${trafficPort}`, 'about:blank'],
    // Its own process group, so closing it ends its helper processes too (they write to the profile).
    { stdio: 'ignore', detached: true, env: { HOME: profile, PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const port = await eventually(() => {
    const f = join(profile, 'DevToolsActivePort');
    return existsSync(f) ? Number(readFileSync(f, 'utf8').split('\n')[0]) || undefined : undefined;
  }, 30_000, 'Chromium\'s DevTools port');
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{ type: string; webSocketDebuggerUrl: string }>;
  const ws = new WebSocket(targets.find((t) => t.type === 'page')!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let next = 0;
  const pending = new Map<number, (m: { result?: any; error?: { message: string } }) => void>();
  // Resources of the current page that failed because the host's network changed (see navigate).
  let networkChanged: string[] = [];
  ws.onmessage = (ev) => {
    const m = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: any };
    if (m.id !== undefined) pending.get(m.id)?.(m);
    if (m.method === 'Network.loadingFailed' && /ERR_NETWORK_CHANGED/.test(m.params?.errorText ?? '')) networkChanged.push(m.params.requestId);
  };
  const send = (method: string, params: object = {}) =>
    new Promise<any>((resolve, reject) => {
      const id = ++next;
      pending.set(id, (m) => (m.error ? reject(new Error(`${method}: ${m.error.message}`)) : resolve(m.result)));
      ws.send(JSON.stringify({ id, method, params }));
    });
  await send('Network.enable');
  // Chromium fails a navigation with ERR_NETWORK_CHANGED when an address appears on the host, which every sandbox
  // the warm pools start meanwhile does (its veth); a user reloads then, and so does this, at most twice.
  const navigate = async (url: string, attempt = 1): Promise<void> => {
    networkChanged = [];
    const r = (await send('Page.navigate', { url })) as { errorText?: string };
    if (r.errorText && /ERR_NETWORK_CHANGED/.test(r.errorText) && attempt < 3) return navigate(url, attempt + 1);
    if (r.errorText) throw new Error(`navigating to ${url}: ${r.errorText}`);
  };
  const evaluate = async (expression: string) => (await send('Runtime.evaluate', { expression, returnByValue: true })).result.value;
  /**
   * Loads a noVNC page and waits until `goal` (a page expression) holds. noVNC does not retry a WebSocket that failed
   * to open (the same ERR_NETWORK_CHANGED can hit it after the page loaded); it shows "Failed to connect to server",
   * and a user reloads: so does this, at most twice, and says so. Any other state past the deadline fails.
   */
  const openNoVnc = async (url: string, goal: string, what: string, diagnose: () => Promise<string>) => {
    const state = `(() => (${goal}) ? 'goal' : (document.getElementById('noVNC_status')?.classList.contains('noVNC_status_error') ? 'failed: ' + document.getElementById('noVNC_status').textContent : ''))()`;
    for (let attempt = 1; ; attempt++) {
      await navigate(url);
      let last = '';
      try {
        // The same change can fail one of noVNC's scripts after the page loaded: its UI then never starts, and
        // the page shows neither state. Chromium reports it (Network.loadingFailed); a user would reload.
        last = await eventually(async () => (await evaluate(state)) || (networkChanged.length ? `failed: ${networkChanged.length} resource(s) ERR_NETWORK_CHANGED` : undefined), 30_000, what);
      } catch (e) {
        throw new Error(`${(e as Error).message} (attempt ${attempt}); in the sandbox: ${await diagnose()}`);
      }
      if (last === 'goal') return;
      if (attempt >= 3) throw new Error(`${what}: noVNC ${last} on ${attempt} loads; in the sandbox: ${await diagnose()}`);
      console.log(`noVNC ${last} (load ${attempt} of ${what}); reloading`);
    }
  };
  const close = async () => {
    ws.close();
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await exited;
    rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  };
  return { send, navigate, evaluate, openNoVnc, close };
}

describe('the stream in a real browser', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed` }, () => {
  let desktop: Sandbox;
  let browser: Awaited<ReturnType<typeof headlessChromium>> | undefined;

  before(async () => {
    deployment();
    await desktopReady();
    desktop = await Sandbox.create({ timeoutMs: 300_000 });
  });
  after(async () => {
    await browser?.close();
    await desktop?.kill();
  });

  // What the stream's two servers said, for a failure message.
  const streamLogs = async () =>
    (await run(desktop, 'pgrep -a -x x11vnc; pgrep -a -f novnc_proxy | head -2; tail -c 1500 /tmp/novnc.log; tail -c 800 /tmp/x11vnc_stderr.log')).out;
  const connected = "document.documentElement.classList.contains('noVNC_connected')";
  const httpUrl = (u: string) => {
    // The SDK builds https://6080-<id>.<domain>/vnc.html; locally the edge's traffic port serves plain http.
    const url = new URL(u);
    url.protocol = 'http:';
    return url.toString();
  };

  test('getUrl() opened in headless Chromium shows the desktop and a click through it lands', async () => {
    const d = deployment();
    await desktop.stream.start();
    try {
      browser = await headlessChromium(d.env.E2B_DOMAIN, d.ports.edgeTraffic);
      await browser.openNoVnc(httpUrl(desktop.stream.getUrl()), connected, 'noVNC connected', streamLogs);
      await clickThrough(browser);
    } finally {
      await stopStream(desktop);
    }
  });

  async function clickThrough(browser: Awaited<ReturnType<typeof headlessChromium>>) {
    // A window to click into; xev prints what it receives.
    const log = '/tmp/xev-browser.log';
    await (await desktop.commands.run(`xev -geometry 300x200+200+200 -event button >${log} 2>&1`, { background: true })).disconnect();
    const win = await eventually(async () => {
      const r = await run(desktop, 'xdotool search --onlyvisible --name "^Event Tester$"');
      return r.code === 0 ? r.out.trim().split('\n')[0] : undefined;
    }, 15_000, 'the xev window');
    const geo = (await desktop.commands.run(`xdotool getwindowgeometry --shell ${win}`)).stdout;
    const target = { x: Number(/X=(\d+)/.exec(geo)![1]) + 150, y: Number(/Y=(\d+)/.exec(geo)![1]) + 100 };
    // Page coordinates of that screen point on noVNC's (scaled) canvas.
    const rect = JSON.parse(await browser.evaluate("JSON.stringify(document.querySelector('#noVNC_container canvas').getBoundingClientRect())")) as { left: number; top: number; width: number; height: number };
    const px = rect.left + (target.x * rect.width) / 1024;
    const py = rect.top + (target.y * rect.height) / 768;
    for (const type of ['mouseMoved', 'mousePressed', 'mouseReleased']) {
      await browser.send('Input.dispatchMouseEvent', { type, x: px, y: py, button: type === 'mouseMoved' ? 'none' : 'left', clickCount: 1 });
    }
    const at = await eventually(async () => {
      const p = await desktop.getCursorPosition();
      return Math.abs(p.x - target.x) <= 3 && Math.abs(p.y - target.y) <= 3 ? p : undefined;
    }, 10_000, `the pointer at ${target.x},${target.y}`);
    assert.ok(at);
    await eventually(async () => /ButtonRelease[^]*button 1/.test(await desktop.files.read(log)), 10_000, 'the click in the xev window');
  }

  test('with requireAuth the page connects only with the key: without it noVNC asks for a password', async () => {
    await desktop.stream.start({ requireAuth: true });
    try {
      const key = desktop.stream.getAuthKey();
      // x11vnc answers with VNC authentication; noVNC shows its credentials dialog and stays unconnected.
      const prompt = "document.getElementById('noVNC_credentials_dlg').classList.contains('noVNC_open')";
      await browser!.openNoVnc(httpUrl(desktop.stream.getUrl()), prompt, 'the password prompt', streamLogs);
      assert.equal(await browser!.evaluate(connected), false);
      await browser!.openNoVnc(httpUrl(desktop.stream.getUrl({ authKey: key })), connected, 'noVNC connected with the key', streamLogs);
    } finally {
      await stopStream(desktop);
    }
  });
});

describe('a desktop sandbox gives its tenant nothing a base sandbox does not', () => {
  let desktop: Sandbox;
  let base: BaseSandbox;

  before(async () => {
    deployment();
    await desktopReady();
    [desktop, base] = await Promise.all([Sandbox.create({ timeoutMs: 300_000 }), BaseSandbox.create({ timeoutMs: 300_000 })]);
  });
  after(async () => {
    await Promise.all([desktop?.kill(), base?.kill()]);
  });

  /** The same probe in both; the desktop's answer must equal base's. */
  async function same(cmd: string, user: 'user' | 'root'): Promise<void> {
    const [d, b] = await Promise.all([run(desktop, cmd, user), run(base, cmd, user)]);
    assert.equal(d.code, 0, `${cmd} failed in the desktop: ${d.out}`);
    assert.deepEqual(d, b, `${cmd} as ${user}`);
  }

  for (const user of ['user', 'root'] as const) {
    test(`capabilities, seccomp and no_new_privs (${user})`, () => same('grep -E "^(Cap|Seccomp|NoNewPrivs)" /proc/self/status', user));
    test(`devices (${user})`, () => same('ls -la /dev | awk \'{print $1, $NF}\' | sort', user));
    test(`mounts: the same points, types and options, nothing more lent from the host (${user})`, () =>
      same("awk '{print $5, $6}' /proc/self/mountinfo | sort", user));
    test(`cgroup limits as its template gives them, and no way out (${user})`, () =>
      same('cat /proc/self/cgroup; ls /sys/fs/cgroup | sort', user));
  }

  test('the X server listens on no network socket; another sandbox cannot reach its display or VNC', async () => {
    await desktop.stream.start();
    const listening = (await desktop.commands.run('netstat -tln')).stdout;
    assert.doesNotMatch(listening, /:600\d\s/, 'no X over TCP');
    assert.match(listening, /:5900\s/);
    const ip = (await desktop.commands.run("hostname -I | awk '{print $1}'")).stdout.trim();
    // All at once: a dropped connection costs the probe's whole timeout.
    const ports = [6000, 5900, 6080];
    const tries = await Promise.all(ports.map((port) => run(base, `timeout 3 bash -c 'echo > /dev/tcp/${ip}/${port}'`)));
    ports.forEach((port, i) => assert.notEqual(tries[i]!.code, 0, `sandbox → desktop ${ip}:${port} must fail`));
    await stopStream(desktop);
  });
});
