// Issue 2 proof: what a sandbox can and cannot reach, and that its limits hold while
// the node and the other sandboxes keep working. Every check runs as `user` and as root, on every
// orchestrator node of the deployment (`cove test` runs two): the others are drained while the suite's
// sandboxes are placed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { CommandExitError, Sandbox } from 'e2b';
import { deployment } from './deployment.js';
import { allNodesHealthy, nodeOf, setDraining } from './nodes.js';
import { ENVD_PORT } from '@cove/contracts/sandbox';

const users = ['user', 'root'] as const;

/** Exit code of a command, without throwing on non-zero. */
async function exitCode(sbx: Sandbox, cmd: string, user: 'user' | 'root' = 'user'): Promise<{ code: number; out: string; error?: string }> {
  try {
    const r = await sbx.commands.run(cmd, { user, timeoutMs: 60_000 });
    return { code: r.exitCode, out: r.stdout + r.stderr };
  } catch (err) {
    if (err instanceof CommandExitError) return { code: err.exitCode, out: err.stdout + err.stderr, error: err.error };
    throw err;
  }
}

const tcpProbe = (ip: string, port: number) => `timeout 3 bash -c 'echo > /dev/tcp/${ip}/${port}'`;

for (const nodeIndex of deployment().nodes.map((_, i) => i)) describe(`isolation on node ${nodeIndex + 1}`, () => {
  let a: Sandbox;
  let b: Sandbox;
  let listener: Server;
  let listenerPort: number;
  const secret = `cove-host-secret-${randomBytes(8).toString('hex')}`;
  const secretFile = `/root/cove-e2e-${randomBytes(4).toString('hex')}`;

  before(async () => {
    const d = deployment();
    const node = d.nodes[nodeIndex]!;
    const others = d.nodes.filter((n) => n !== node);
    for (const n of others) await setDraining(d, n.rpcPort, true);
    try {
      [a, b] = await Promise.all([Sandbox.create({ timeoutMs: 300_000 }), Sandbox.create({ timeoutMs: 300_000 })]);
    } finally {
      for (const n of others) await setDraining(d, n.rpcPort, false);
      await allNodesHealthy(d);
    }
    for (const s of [a, b]) assert.equal(await nodeOf(d, s.sandboxId), node.rpcPort, `the suite's sandboxes run on node ${nodeIndex + 1}`);
    writeFileSync(secretFile, secret);
    listener = createServer((s) => s.end('host-service\n'));
    await new Promise<void>((r) => listener.listen(0, '0.0.0.0', r));
    listenerPort = (listener.address() as { port: number }).port;
  });
  after(async () => {
    rmSync(secretFile, { force: true });
    listener?.close();
    await Promise.all([a?.kill(), b?.kill()]);
  });

  test('uid 0 inside is not root outside, hostname is the sandbox id', async () => {
    const r = await exitCode(a, 'id -u; cat /proc/self/uid_map; hostname', 'root');
    const [uid, map, host] = r.out.trim().split('\n');
    assert.equal(uid, '0');
    const [inside, outside] = map.trim().split(/\s+/).map(Number);
    assert.equal(inside, 0);
    assert.notEqual(outside, 0, 'uid 0 in the sandbox must map to an unprivileged host uid');
    assert.equal(host, a.sandboxId);
  });

  for (const user of users) {
    test(`host processes are invisible (${user})`, async () => {
      const r = await exitCode(a, 'ps -eo pid,args --no-headers', user);
      assert.equal(r.code, 0);
      assert.doesNotMatch(r.out, /orchestrator|control-plane|edge\/dist|systemd|sshd/);
      assert.match(r.out, /^\s*1\s.*envd/m, 'pid 1 is envd');
    });

    test(`host files are unreadable (${user})`, async () => {
      const r = await exitCode(a, `cat ${secretFile}; cat /proc/1/root${secretFile}; grep -rs ${secret} /root /home /tmp /mnt /opt`, user);
      assert.ok(!r.out.includes(secret), 'a host file was readable from the sandbox');
      assert.notEqual(r.code, 0);
    });

    test(`node services, the host and the metadata address are unreachable (${user})`, async () => {
      const d = deployment();
      const hostIps = Object.values(networkInterfaces())
        .flat()
        .filter((i) => i && i.family === 'IPv4' && !i.internal)
        .map((i) => i!.address);
      assert.ok(hostIps.length > 0);
      // The listener answers on the host itself: the probe below is meaningful.
      const ports = [listenerPort, d.ports.orchestratorRpc, d.ports.orchestratorProxy, d.ports.edgeApi, d.ports.edgeTraffic, d.ports.controlPlane];
      // All probes at once: a dropped connection costs the probe's whole timeout, so serial probes took a minute.
      // envd's own port inside the sandbox is the control: the same probe does connect there.
      const control = `127.0.0.1:${ENVD_PORT}`;
      const targets = [control, ...hostIps.flatMap((ip) => ports.map((port) => `${ip}:${port}`))];
      const script = targets.map((t) => `(${tcpProbe(t.split(':')[0]!, Number(t.split(':')[1]))} 2>/dev/null; echo "${t} $?") &`).join('\n') + '\nwait';
      // The metadata probe runs beside the others: each unreachable target costs its whole timeout.
      const [r, meta] = await Promise.all([exitCode(a, script, user), exitCode(a, 'curl -sS -m 3 http://169.254.169.254/latest/meta-data/', user)]);
      const results = new Map(r.out.split('\n').filter((l) => /^[\d.]+:\d+ \d+$/.test(l)).map((l) => l.split(' ') as [string, string]));
      assert.equal(results.get(control), '0', `the probe reaches envd inside the sandbox: ${r.out}`);
      for (const t of targets.slice(1)) {
        assert.ok(results.has(t), `no result for ${t}: ${r.out}`);
        assert.notEqual(results.get(t), '0', `${t} must be unreachable from the sandbox`);
      }
      assert.notEqual(meta.code, 0, 'metadata address must be unreachable');
    });
  }

  test('other sandboxes are unreachable, though their port is open', async () => {
    await b.commands.run('python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1', { background: true });
    const bIp = (await b.commands.run("hostname -I | awk '{print $1}'")).stdout.trim();
    assert.match(bIp, /^\d+\.\d+\.\d+\.\d+$/);
    // b serves on 8000 (checked from inside b) …
    let served = false;
    for (let i = 0; i < 50 && !served; i++) served = (await exitCode(b, 'curl -s -o /dev/null -m 2 http://127.0.0.1:8000/')).code === 0;
    assert.ok(served, 'b serves on 8000');
    // … but a cannot reach it.
    const tries = await Promise.all(users.map((user) => exitCode(a, `curl -sS -o /dev/null -m 3 http://${bIp}:8000/`, user)));
    users.forEach((user, i) => assert.notEqual(tries[i]!.code, 0, `sandbox a reached sandbox b as ${user}`));
  });

  test('a memory hog is killed by its own limit; the sandbox keeps working', async () => {
    const hog = await exitCode(
      a,
      `python3 -c "
b = []
while True:
    b.append(bytearray(64 * 1024 * 1024))
    for i in range(0, len(b[-1]), 4096): b[-1][i] = 1
"`,
    );
    assert.notEqual(hog.code, 0);
    // envd reports a signal death as exit code -1 with status "signal: killed" (E2B's envd does the same).
    assert.ok(/killed/.test(hog.error ?? '') || /MemoryError/.test(hog.out), `hog ended with ${hog.code} (${hog.error}): ${hog.out.slice(-200)}`);
    assert.equal((await a.commands.run('echo alive')).stdout, 'alive\n');
  });

  test('writing past the disk size fails with "no space" inside the sandbox', async () => {
    const r = await exitCode(a, 'dd if=/dev/zero of=/home/user/fill bs=1M count=100000 2>&1; rc=$?; rm -f /home/user/fill; exit $rc');
    assert.notEqual(r.code, 0);
    assert.match(r.out, /No space left on device/);
    assert.equal((await a.commands.run('echo still-writable > /tmp/x && cat /tmp/x')).stdout, 'still-writable\n');
  });

  test('a fork bomb is stopped by the pids limit; the node and other sandboxes keep working', async () => {
    const bomb = await Sandbox.create({ timeoutMs: 120_000 });
    try {
      await bomb.commands.run('bomb() { bomb | bomb & }; bomb', { background: true }).catch(() => undefined);
      // While it rages: the other sandboxes answer and new ones can be made.
      for (let i = 0; i < 5; i++) assert.equal((await a.commands.run('echo ok')).stdout, 'ok\n');
      const fresh = await Sandbox.create({ timeoutMs: 60_000 });
      assert.equal((await fresh.commands.run('echo fresh')).stdout, 'fresh\n');
      await fresh.kill();
    } finally {
      assert.equal(await bomb.kill(), true);
    }
    assert.equal(await bomb.isRunning(), false);
    assert.equal((await b.commands.run('echo b-ok')).stdout, 'b-ok\n');
  });
});
