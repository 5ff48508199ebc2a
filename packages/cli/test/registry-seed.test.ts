// The registry start + seed path of `cove up`, against a temp state dir, with a tiny rootfs instead of mmdebstrap.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { importLayer, RegistryAuthError, RegistryClient } from '@cove/oci';
import { freePort } from '@cove/test-support/free-port';
import { request } from 'undici';
import { seedRegistry, startComponent, topologyOf } from '../src/deployment.js';
import { statePaths } from '../src/paths.js';
import { loadOrCreateSecrets, REGISTRY_USERNAME } from '../src/secrets.js';
import { running, stop } from '../src/supervisor.js';
import { components } from '../src/topology.js';
import type { TarballBuilder } from '../src/seed-image.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-cli-registry-'));
const paths = statePaths(join(dir, 'state'));
after(async () => {
  await stop(paths.run, 'registry', 5000);
  rmSync(dir, { recursive: true, force: true });
});

let builds = 0;
const tinyRootfs: TarballBuilder = async (_recipe, out, say) => {
  builds++;
  const root = join(dir, `rootfs-${builds}`);
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n');
  execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', out, '.']);
  say('I: tiny rootfs written');
};

test('cove up starts the registry with auth, seeds debian:bookworm once, and stops it', async () => {
  for (const d of [paths.dir, paths.run, paths.logs, paths.data]) mkdirSync(d, { recursive: true });
  const topo = topologyOf({ stateDir: paths.dir, portOffset: 0, nodeDataDir: join(dir, 'var-lib-cove'), warmPool: 'base=0', say: () => undefined });
  topo.ports.registry = await freePort(); // not 5000: a developer's `cove up` may be running
  const secrets = loadOrCreateSecrets(paths.secrets);
  const spec = components(topo, secrets, paths).find((c) => c.name === 'registry')!;
  const lines: string[] = [];
  const say = (l: string) => lines.push(l);

  await startComponent(spec, paths, { say });
  const rec = running(paths.run, 'registry');
  assert.ok(rec, 'pid file of a live docker-registry');
  assert.ok(readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').includes('docker-registry'));
  const url = `http://127.0.0.1:${topo.ports.registry}`;
  const anon = await request(`${url}/v2/_catalog`);
  await anon.body.dump();
  assert.equal(anon.statusCode, 401, 'no unauthenticated access');
  await assert.rejects(new RegistryClient({ url, username: REGISTRY_USERNAME, password: 'nope' }).ping(), RegistryAuthError);

  await startComponent(spec, paths, { say });
  assert.ok(lines.some((l) => /registry: already running/.test(l)));

  await seedRegistry(topo, secrets, { say, seedTarball: tinyRootfs });
  assert.equal(builds, 1);
  assert.ok(lines.some((l) => /building debian:bookworm/.test(l)));
  assert.ok(lines.some((l) => /debian:bookworm pushed/.test(l)));
  const client = new RegistryClient({ url, username: REGISTRY_USERNAME, password: secrets.registryPassword });
  const digests = new Set<string>();
  for (const ref of ['debian:bookworm', 'debian:12', 'debian', 'debian:bookworm-slim', 'docker.io/library/debian:latest']) {
    const img = await client.getImage(ref);
    digests.add(img.digest);
    assert.deepEqual(img.imageConfig.cmd, ['bash']);
    assert.match(img.imageConfig.env.PATH, /\/usr\/bin/);
    assert.equal(img.layers.length, 1);
  }
  assert.equal(digests.size, 1, 'every tag names one manifest');
  const img = await client.getImage('debian:bookworm');
  const dest = join(dir, 'imported');
  await importLayer(await client.openBlob(img.repository, img.layers[0]), dest, { idOffset: 100000 });
  assert.match(readFileSync(join(dest, 'etc/os-release'), 'utf8'), /bookworm/);

  // Present: nothing built or pushed again.
  lines.length = 0;
  await seedRegistry(topo, secrets, { say, seedTarball: tinyRootfs });
  assert.deepEqual(lines, ['registry: debian:bookworm present']);

  // A fresh registry (as after `cove test` wipes its deployment) is seeded from the machine's cache.
  assert.ok(await stop(paths.run, 'registry', 5000));
  rmSync(join(paths.data, 'registry'), { recursive: true, force: true });
  await startComponent(spec, paths, { say });
  lines.length = 0;
  await seedRegistry(topo, secrets, { say, seedTarball: tinyRootfs });
  assert.equal(builds, 1, 'tarball reused');
  assert.ok(lines.some((l) => /pushed/.test(l)));
  assert.ok(existsSync(join(topo.templateCacheDir, '.images', 'debian-bookworm')));

  assert.ok(await stop(paths.run, 'registry', 5000));
  assert.equal(running(paths.run, 'registry'), undefined);
});
