// A sandbox process holding `mib` MiB of written (resident) memory, as the pause, resume and fork benchmarks need.

import { Sandbox } from 'e2b';

/**
 * Starts the holder and waits until its memory is written; returns its resident size as `ps` reports it (KiB).
 * The holder also answers on 127.0.0.1:7000 with the sum of one byte of each of its pages (TOUCH_ALL reads it).
 */
export async function holdMemory(sbx: Sandbox, mib: number): Promise<string> {
  await sbx.files.write(
    '/home/user/hold.py',
    `import os, socket\nbuf = bytearray(os.urandom(${mib} * 1024 * 1024))\nsrv = socket.create_server(('127.0.0.1', 7000))\nopen('/tmp/held', 'w').write('ok')\n` +
      `while True:\n    c, _ = srv.accept()\n    c.sendall(str(sum(buf[::4096])).encode())\n    c.close()\n`,
  );
  await sbx.commands.run('python3 /home/user/hold.py', { background: true });
  for (let i = 0; i < 100 && (await sbx.commands.run('cat /tmp/held 2>/dev/null || true')).stdout !== 'ok'; i++) await new Promise((r) => setTimeout(r, 200));
  return (await sbx.commands.run('ps -o rss= -C python3 | sort -n | tail -1')).stdout.trim();
}

/** One pause, then one resume on the same node (`Sandbox.connect`), as the SDK user sees them (ms each). */
export async function pauseThenResume(sbx: Sandbox): Promise<{ pauseMs: number; resumeMs: number }> {
  let t0 = performance.now();
  await sbx.pause();
  const pauseMs = performance.now() - t0;
  t0 = performance.now();
  await Sandbox.connect(sbx.sandboxId, { timeoutMs: 900_000 });
  return { pauseMs, resumeMs: performance.now() - t0 };
}

/** A command that makes the holder read every page of its memory (a lazily restored sandbox faults them in). */
export const TOUCH_ALL = `python3 -c "import socket; print(socket.create_connection(('127.0.0.1', 7000)).recv(64).decode())"`;
