// One-time, idempotent host changes the runtime needs. Each is reversible and recorded in
// docs/decisions.md: IPv4 forwarding on, and on hybrid cgroup hosts the hugetlb controller moved to
// its own v1 hierarchy (Debian's crun 1.8.1 refuses hybrid mode while cgroup2 has any controller).

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { raiseHostKernelBudgets } from './kernel-budgets.js';
import { run } from './run-command.js';
import { HostUnsupported } from './runtime-errors.js';

async function mountpoints(): Promise<Map<string, string>> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const out = new Map<string, string>();
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (fields[4] && sep > 0) out.set(fields[4], fields[sep + 1] ?? '');
  }
  return out;
}

export async function prepareHost(logger: Logger): Promise<void> {
  if (process.getuid?.() !== 0) throw new HostUnsupported('the sandbox runtime must run as root');
  for (const tool of ['crun', 'ip', 'nft', 'losetup', 'mkfs.ext4', 'nsenter', 'mount', 'mmdebstrap']) {
    const r = await run('sh', ['-c', `command -v ${tool}`], { allowFailure: true });
    if (r.code !== 0) throw new HostUnsupported(`missing host tool ${tool}`);
  }
  const mounts = await mountpoints();
  if (mounts.get('/sys/fs/cgroup') !== 'cgroup2' && mounts.get('/sys/fs/cgroup/unified') === 'cgroup2') {
    const controllers = (await readFile('/sys/fs/cgroup/unified/cgroup.controllers', 'utf8')).trim();
    if (controllers.split(' ').includes('hugetlb') && !mounts.has('/sys/fs/cgroup/hugetlb')) {
      await mkdir('/sys/fs/cgroup/hugetlb', { recursive: true });
      await run('mount', ['-t', 'cgroup', '-o', 'hugetlb', 'cgroup', '/sys/fs/cgroup/hugetlb']);
      logger.info('mounted the hugetlb cgroup v1 hierarchy (crun refuses hybrid mode otherwise)');
    }
    const left = (await readFile('/sys/fs/cgroup/unified/cgroup.controllers', 'utf8')).trim();
    if (left) throw new HostUnsupported(`cgroup2 still has controllers in hybrid mode: ${left}`);
  }
  const fwd = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
  if (fwd !== '1') {
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1');
    logger.info('enabled net.ipv4.ip_forward');
  }
  await raiseHostKernelBudgets(logger);
}
