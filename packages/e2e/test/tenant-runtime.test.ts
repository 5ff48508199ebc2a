// Hostile tenant, part 2: what a sandbox's processes may do to the kernel they share with the node and the other
// sandboxes, through the unchanged SDK. Each check tries the abuse itself, as `user`, as root, and via sudo.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { CommandExitError, Sandbox, type FilesystemEvent } from 'e2b';
import { deployment, eventually } from './deployment.js';

const users = ['user', 'root'] as const;

async function run(sbx: Sandbox, cmd: string, user: 'user' | 'root'): Promise<{ code: number; out: string }> {
  try {
    const r = await sbx.commands.run(cmd, { user, timeoutMs: 60_000 });
    return { code: r.exitCode, out: r.stdout + r.stderr };
  } catch (err) {
    if (err instanceof CommandExitError) return { code: err.exitCode, out: err.stdout + err.stderr };
    throw err;
  }
}

const py = (lines: string[]) => `python3 -c '${lines.join('\n')}'`;

/** Takes every inotify instance, queued signal and message queue its uid may have, reports, and holds them. */
const HOG = [
  'import ctypes, os, signal, time',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'n = 0',
  'while libc.inotify_init1(0) >= 0: n += 1',
  'ino = ctypes.get_errno()',
  'signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])',
  'libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]',
  'q = 0',
  'while libc.sigqueue(os.getpid(), signal.SIGRTMIN, None) == 0: q += 1',
  'sq = ctypes.get_errno()',
  'libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]',
  'm = 0',
  'while libc.mq_open(b"/hog-%d-%d" % (os.getuid(), m), os.O_CREAT | os.O_RDWR, 0o600, None) >= 0: m += 1',
  'mq = ctypes.get_errno()',
  'open("/tmp/hog-%d" % os.getuid(), "w").write("%d %d %d %d %d %d\\n" % (n, ino, q, sq, m, mq))',
  'time.sleep(3600)',
];

/**
 * One of each, released at once: "ok" when the uid still has room. Queued signals are the uid's across the
 * sandbox, and a SIGCHLD pending for a moment elsewhere (envd reaping a command) frees its slot when delivered, so
 * a uid at its limit may still queue a few: "ok" needs room for 32, not one.
 */
const ONE_OF_EACH = [
  'import ctypes, os, signal',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'fd = libc.inotify_init1(0)',
  'signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])',
  'libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]',
  'sq = 0 if all(libc.sigqueue(os.getpid(), signal.SIGRTMIN, None) == 0 for _ in range(32)) else -1',
  'libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]',
  'name = b"/probe-%d" % os.getpid()',
  'mq = libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)',
  'libc.mq_unlink(name)',
  'print("inotify", "ok" if fd >= 0 else "fail", "sigqueue", "ok" if sq == 0 else "fail", "mqueue", "ok" if mq >= 0 else "fail")',
];

/** Families a sandbox must not reach (VSOCK, TIPC, RDS, ALG, CAN, BLUETOOTH, PACKET, AX25, XDP, KCM) and ones it needs. */
const SOCKETS = [
  'import ctypes, socket',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'def sock(fam, typ, proto=0):',
  '    try:',
  '        socket.socket(fam, typ, proto).close(); return "ok"',
  '    except OSError as e: return str(e.errno)',
  'fams = [(40, 1), (30, 4), (21, 5), (38, 5), (29, 3), (31, 1), (17, 3), (3, 2), (44, 3), (41, 2)]',
  'print("refused", " ".join(sock(f, t) for f, t in fams))',
  'print("netlink", sock(16, 3, 0), sock(16, 3, 4), sock(16, 3, 9))',
  's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.send(b"x")',
  'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); u.sendto(b"y", u.getsockname())',
  'p, q = socket.socketpair(); p.send(b"z")',
  'print("normal", a.recv(1).decode(), u.recv(1).decode(), q.recv(1).decode())',
  'libc.personality.argtypes = [ctypes.c_ulong]',
  'print("personality", libc.personality(0x400000), ctypes.get_errno(), libc.personality(0xffffffff))',
];

describe('tenant runtime', () => {
  let a: Sandbox;
  let b: Sandbox;

  before(async () => {
    deployment();
    [a, b] = await Promise.all([Sandbox.create({ timeoutMs: 300_000 }), Sandbox.create({ timeoutMs: 300_000 })]);
  });
  after(async () => {
    await Promise.all([a?.kill(), b?.kill()]);
  });

  for (const [user, prefix] of [['user', ''], ['root', ''], ['user', 'sudo -n ']] as const) {
    const who = `${user}${prefix ? ' via sudo' : ''}`;
    test(`no sandbox process can lower its OOM score below 0; envd runs at 0 (${who})`, async () => {
      const script = [
        'cat /proc/self/oom_score_adj',
        'for v in -1000 -998 -1; do (echo $v > /proc/self/oom_score_adj) 2>/dev/null && echo lowered $v; done',
        'echo 0 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj',
        'cat /proc/1/oom_score_adj /proc/$(pgrep -P 1 -f envd-start.cjs)/oom_score_adj',
      ].join('; ');
      const r = await run(a, `${prefix}sh -c '${script}'`, user);
      assert.equal(r.code, 0, r.out);
      const [start, zero, tini, envd, ...rest] = r.out.trim().split('\n');
      assert.deepEqual(rest, [], `a process lowered its score: ${r.out}`);
      assert.equal(start, '100', 'what envd starts is the OOM killer\'s first choice');
      assert.equal(zero, '0');
      assert.equal(tini, '0');
      assert.equal(envd, '0');
    });
  }

  test('every command has its OOM score from its first instruction, even 40 started at once (user and root)', async () => {
    // envd starts each through its envd-exec helper. Before, envd raised the score after the exec, and in a
    // sandbox 3-6 of 40 such reads still saw envd's 0 (docs/decisions.md).
    for (const user of users) {
      const outs = await Promise.all(Array.from({ length: 40 }, () => run(a, 'cat /proc/self/oom_score_adj', user)));
      assert.deepEqual(outs.filter((o) => o.out !== '100\n'), [], user);
    }
  });

  for (const user of users) {
    test(`sockets of unneeded families and odd personalities are refused, the usual ones work (${user})`, async () => {
      const r = await run(a, py(SOCKETS), user);
      assert.equal(r.code, 0, r.out);
      assert.equal(
        r.out,
        [`refused ${Array(10).fill('97').join(' ')}`, 'netlink ok ok 93', 'normal x y z', 'personality -1 1 0', ''].join('\n'),
      );
      const tools = await run(a, 'ip -o addr show dev lo && ss -tln', user);
      assert.equal(tools.code, 0, tools.out);
      assert.match(tools.out, /inet 127\.0\.0\.1/);
    });
  }

  test('the budgets and the OOM floor hold in a fresh sandbox and again after pause and resume (user and root)', async () => {
    const probe = [
      'cat /proc/sys/user/max_inotify_instances /proc/sys/user/max_inotify_watches /proc/sys/fs/mqueue/queues_max',
      'grep -E "^Max (pending signals|msgqueue size)" /proc/self/limits | tr -s " " | cut -d" " -f4,5',
      '(echo -1 > /proc/self/oom_score_adj) 2>/dev/null && echo lowered',
      'true',
    ].join('; ');
    const expected = '512\n65536\n4\n1024 1024\n16384 16384\n';
    const c = await Sandbox.create({ timeoutMs: 300_000 });
    try {
      for (const user of users) assert.equal((await run(c, probe, user)).out, expected, `fresh, ${user}`);
      assert.equal(await c.pause(), true);
      const resumed = await Sandbox.connect(c.sandboxId, { timeoutMs: 300_000 });
      for (const user of users) assert.equal((await run(resumed, probe, user)).out, expected, `resumed, ${user}`);
    } finally {
      await c.kill();
    }
  });

  test('one sandbox at its inotify, signal and message-queue limits leaves the others and the node working', async () => {
    for (const user of users) await a.commands.run(py(HOG), { user, background: true });
    const held = async (uid: number) => {
      const r = await run(a, `cat /tmp/hog-${uid}`, 'root');
      return r.code === 0 && r.out.trim() ? r.out.trim().split(' ').map(Number) : undefined;
    };
    for (const uid of [0, 1000]) {
      const [inotify, inoErr, sigq, sqErr, mq, mqErr] = await eventually(() => held(uid), 60_000, `hog of uid ${uid}`);
      // Per uid inside: 512 inotify instances (envd's own count for root), 1024 queued signals,
      // one message queue (16 KiB of RLIMIT_MSGQUEUE; the sandbox has room for 4 of ≤10.7 KiB).
      assert.ok(inotify! > 500 && inotify! <= 512, `uid ${uid}: ${inotify} inotify instances`);
      assert.equal(inoErr, 24);
      assert.ok(sigq! > 1000 && sigq! <= 1024, `uid ${uid}: ${sigq} queued signals`);
      assert.equal(sqErr, 11);
      assert.equal(mq, 1, `uid ${uid}: ${mq} message queues`);
      assert.equal(mqErr, 24);
    }
    // The hog's uid is at its limits (not a probe that cannot fail) …
    assert.equal((await run(a, py(ONE_OF_EACH), 'root')).out.trim(), 'inotify fail sigqueue fail mqueue fail');
    // … and the other sandbox has all of its own, as user and root.
    for (const user of users) {
      const r = await run(b, py(ONE_OF_EACH), user);
      assert.equal(r.out.trim(), 'inotify ok sigqueue ok mqueue ok', `${user}: ${r.out}`);
    }
    // envd's watchDir in the other sandbox (inotify in envd, as root there).
    await b.files.makeDir('/home/user/watched');
    const events: FilesystemEvent[] = [];
    const handle = await b.files.watchDir('/home/user/watched', (e) => void events.push(e));
    await b.files.write('/home/user/watched/new.txt', 'n');
    await eventually(() => events.some((e) => e.name.endsWith('new.txt')), 15_000, 'watch event in the other sandbox');
    await handle.stop();
    // And the node's own root (the kernel charges every sandbox to host root's counters).
    const host = execFileSync('python3', ['-c', 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)']).toString().trim();
    assert.equal(host, 'True');
  });
});
