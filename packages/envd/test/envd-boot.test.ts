// envd-boot (native/envd-boot.c) as a process: what a slot starts envd's node through. It preloads the mmap-hints
// library from a sealed memfd, and the program it becomes keeps neither LD_PRELOAD nor the descriptor.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { open, readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { ENVD_BOOT } from '@cove/contracts/sandbox';
import { eventually } from '@cove/test-support/eventually';

const BOOT = fileURLToPath(new URL(`../bundle/${ENVD_BOOT}`, import.meta.url));
const built = await stat(BOOT).then(() => true, () => false);
const pexec = promisify(execFile);
const ENV = { PATH: '/usr/bin:/bin' };

/** Runs `envd-boot FILE ARG...`: exit code and output, never a throw. */
async function boot(args: string[], env: Record<string, string> = ENV): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await pexec(BOOT, args, { env });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('envd-boot', { skip: built ? false : 'run `npm run bundle -w @cove/envd` first' }, () => {
  test('becomes FILE with its argv; FILE maps the library, and neither it nor its children see LD_PRELOAD or the descriptor', async () => {
    const r = await boot(['/bin/sh', '-c', 'echo "$0 $1"; grep -c cove-mmap-hints /proc/$$/maps; env; ls -l /proc/$$/fd/', 'arg0', 'arg1'], {
      ...ENV,
      KEEP: 'kept',
    });
    assert.equal(r.code, 0, r.stderr);
    const [first, mapped, ...rest] = r.stdout.split('\n');
    assert.equal(first, 'arg0 arg1');
    // The shell itself has it mapped (ld.so loaded it), in its text, data and read-only segments.
    assert.ok(Number(mapped) >= 2, `the shell maps the library ${mapped} times`);
    const tail = rest.join('\n');
    assert.match(tail, /^KEEP=kept$/m);
    assert.doesNotMatch(tail, /LD_PRELOAD|memfd/);
  });

  test("node under it gets its heap pages packed: its mappings span a few GiB of address space, not hundreds", async () => {
    const script = "const a=[];for(let i=0;i<100000;i++)a.push({i});const m=require('fs').readFileSync('/proc/self/maps','utf8').trim().split('\\n');console.log(new Set(m.map(l=>BigInt('0x'+l.slice(0,l.indexOf('-')))>>30n)).size)";
    const r = await boot([process.execPath, '-e', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Number(r.stdout) <= 8, `node's mappings span ${r.stdout.trim()} separate GiB`);
  });

  test('the memfd is sealed: not even root on the host can write the library under a running program', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('opening /proc/<pid>/map_files needs root');
    const child = spawn(BOOT, ['/bin/sleep', '30'], { env: ENV, stdio: 'ignore' });
    try {
      const line = await eventually(async () => {
        const maps = await readFile(`/proc/${child.pid}/maps`, 'utf8');
        const hit = maps.split('\n').find((l) => l.endsWith('/memfd:cove-mmap-hints (deleted)'));
        assert.ok(hit, 'the library is mapped');
        return hit;
      });
      const file = `/proc/${child.pid}/map_files/${line.slice(0, line.indexOf(' '))}`;
      await assert.rejects(async () => {
        const h = await open(file, 'r+');
        try {
          await h.write(Buffer.from('x'), 0, 1, 0);
        } finally {
          await h.close();
        }
      }, (e: NodeJS.ErrnoException) => e.code === 'EPERM');
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('an environment too large to extend runs FILE without the library rather than not at all', async () => {
    const big = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`V${i}`, String(i)]));
    const r = await boot(['/bin/sh', '-c', 'grep -c cove-mmap-hints /proc/$$/maps; echo "$V299"'], { ...ENV, ...big });
    assert.equal(r.stdout, '0\n299\n');
  });

  test('a FILE it cannot run exits 127 with the reason, as the slot would have had it started FILE directly', async () => {
    assert.deepEqual(await boot(['/nonexistent/node']), {
      code: 127,
      stdout: '',
      stderr: 'envd-boot: cannot run /nonexistent/node: no such file or directory\n',
    });
    const none = await boot([]);
    assert.equal(none.code, 127);
    assert.match(none.stderr, /^usage: envd-boot FILE/);
  });
});
