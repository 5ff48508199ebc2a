// A checkpoint image dir is an artifact (a snapshot downloaded from cluster storage): restoreSlot must not take a
// host path from its cove-checkpoint.json, nor let a key or destination smuggle extra criu arguments. A stand-in
// criu that leaves a mark when run shows the restore is refused before criu starts; a well-formed image gets only
// this node's sources.

import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { externalArgs, restoreSlot } from '../src/checkpoint/criu.js';

describe('restore from an untrusted checkpoint image', () => {
  let dir: string;
  let criu: string;
  const mark = (): string => join(dir, 'criu-ran');
  const net = { netnsName: 'cove-untrusted-test-ns', hostVeth: 'cvut0', addressCidr: '10.250.0.2/16', gateway: '10.250.0.1' };
  const ours = { '/opt/cove/bin/node': '/var/lib/cove/bin-restore/node', '/dev/null': '/dev/null' };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cove-untrusted-'));
    criu = join(dir, 'criu');
    await writeFile(criu, `#!/bin/sh\ntouch ${mark()}\nexit 1\n`, { mode: 0o755 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function imageWith(externals: unknown): Promise<string> {
    const images = join(dir, `images-${Math.random().toString(36).slice(2)}`);
    await mkdir(images);
    await writeFile(join(images, 'cove-checkpoint.json'), JSON.stringify({ version: 1, createdAt: '', externals }));
    return images;
  }

  const forged: Array<[string, unknown]> = [
    ['a host path as a bind source', [{ key: 'm0', destination: '/opt/cove/bin/node', source: '/etc/shadow' }, { key: 'm1', destination: '/mnt/host', source: '/' }]],
    ['a source for a destination this node does not bind', [{ key: 'm0', destination: '/root/.ssh', source: '/root/.ssh' }]],
    ['a key that injects arguments', [{ key: 'm0]:/etc/shadow --external mnt[m9', destination: '/opt/cove/bin/node', source: '' }]],
    ['a destination that injects arguments', [{ key: 'm0', destination: '/x]:/etc', source: '/dev/null' }]],
    ['no list at all', { m0: '/etc' }],
  ];

  for (const [what, externals] of forged) {
    it(`refuses ${what} before criu runs`, async () => {
      const imagesDir = await imageWith(externals);
      await assert.rejects(restoreSlot({ criu, imagesDir, rootfs: join(dir, 'rootfs'), net, sources: ours, workDir: imagesDir }), {
        name: 'CheckpointFailed',
        message: /untrusted checkpoint image/,
      });
      await assert.rejects(access(mark()), 'criu never ran');
    });
  }

  it('maps a well-formed image onto this node\'s own sources only', () => {
    const args = externalArgs(
      [
        { key: 'm0', destination: '/opt/cove/bin/node', source: '/some/other/node/path' },
        { key: 'm1', destination: '/proc/kcore', source: '/dev/null' },
      ],
      ours,
    );
    assert.deepEqual(args, ['--external', 'mnt[m0]:/var/lib/cove/bin-restore/node', '--external', 'mnt[m1]:/dev/null']);
  });
});
