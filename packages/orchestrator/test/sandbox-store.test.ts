// The sandbox records on disk: what saveVisible promises (readable at once, fsynced later, never half a record).
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { SandboxStore } from '../src/sandboxes/sandbox-store.js';
import type { SandboxRecord } from '../src/sandboxes/sandbox-record.js';

function record(sandboxId: string): SandboxRecord {
  return {
    version: 1,
    sandboxId,
    templateId: 'base',
    buildId: '',
    teamId: 'team-1',
    vcpu: 1,
    memoryMb: 256,
    diskMb: 1024,
    metadata: {},
    startTime: 1,
    endTime: 2,
    envdVersion: '0.1.0',
    allowInternetAccess: false,
    egress: { allowOut: [], denyOut: [] },
    trafficTokenSha256: '',
    maskRequestHost: '',
    slotId: `slot-${sandboxId}`,
    address: '10.0.0.2',
    pid: 1,
    envVars: {},
  } as SandboxRecord;
}

describe('SandboxStore', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  async function store(): Promise<{ s: SandboxStore; warnings: unknown[] }> {
    const dir = await mkdtemp(join(tmpdir(), 'cove-store-'));
    dirs.push(dir);
    const warnings: unknown[] = [];
    const log = pino({ level: 'warn' }, { write: (l: string) => void warnings.push(JSON.parse(l)) });
    const s = new SandboxStore(dir, 'node-1', log);
    await s.init();
    return { s, warnings };
  }

  it('a record saveVisible wrote is read back by another store at once, before its flush', async () => {
    const { s, warnings } = await store();
    const ids = Array.from({ length: 20 }, (_, i) => `sbx-${i}`);
    await Promise.all(ids.map((id) => s.saveVisible(record(id))));
    // A second store on the same directory is what the next process after a kill -9 sees.
    const other = new SandboxStore(join(s.dir, '..', '..', '..'), 'node-1', pino({ level: 'silent' }));
    assert.deepEqual((await other.loadAll()).map((r) => r.sandboxId).sort(), [...ids].sort());
    await s.flushed();
    assert.deepEqual((await readdir(s.dir)).filter((n) => n.endsWith('.tmp')), []);
    assert.deepEqual(warnings, []);
  });

  it('a record removed before its flush is no error, and a later save replaces it', async () => {
    const { s, warnings } = await store();
    await s.saveVisible(record('gone'));
    await s.remove('gone');
    await s.saveVisible(record('kept'));
    await s.save({ ...record('kept'), endTime: 99 });
    await s.flushed();
    const all = await s.loadAll();
    assert.deepEqual(all.map((r) => [r.sandboxId, r.endTime]), [['kept', 99]]);
    assert.deepEqual(warnings, []);
  });

  it('a torn record (a crash before its flush) is dropped by recovery, not fatal', async () => {
    const { s } = await store();
    await s.saveVisible(record('whole'));
    await writeFile(join(s.dir, 'torn.json'), '');
    assert.deepEqual((await s.loadAll()).map((r) => r.sandboxId), ['whole']);
    assert.deepEqual((await readdir(s.dir)).sort(), ['whole.json']);
  });
});
