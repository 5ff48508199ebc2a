// Local-driver write/read throughput, artifact dedupe cost (hash-only second put) and node-cache lease
// latency on this machine's disk. Prints a table to stderr and `BENCH_RESULT {...}` lines to stdout for
// `cove bench`. Pure library work, so one process.
//
//   node packages/storage/dist/bench/storage.bench.js [--mib 64] [--objects 500]

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { CachedStore, LocalBlobStore, putArtifact } from '../src/index.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '64' }, objects: { type: 'string', default: '500' } } });
const MIB = Number(values.mib);
const OBJECTS = Number(values.objects);
const logger = pino({ level: 'silent' });
const chunk = Buffer.alloc(1024 * 1024, 7);

function body(mib: number, salt: number): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < mib; i++) {
        const c = Buffer.from(chunk);
        c.writeUInt32LE(salt, 0);
        c.writeUInt32LE(i, 4);
        yield c;
      }
    })(),
  );
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const results: { name: string; value: number; unit: string }[] = [];
const record = (name: string, value: number, unit: string): void => {
  results.push({ name, value: Math.round(value * 100) / 100, unit });
};

const dir = await mkdtemp(join(tmpdir(), 'cove-storage-bench-'));
try {
  const store = new LocalBlobStore({ root: join(dir, 'store'), logger });

  let t = process.hrtime.bigint();
  await store.put('bench/big', body(MIB, 1));
  record('storage.local.put', MIB / (Number(process.hrtime.bigint() - t) / 1e9), 'MiB/s');

  t = process.hrtime.bigint();
  for await (const _ of await store.get('bench/big')) void _;
  record('storage.local.get', MIB / (Number(process.hrtime.bigint() - t) / 1e9), 'MiB/s');

  await putArtifact(store, body(MIB, 2));
  t = process.hrtime.bigint();
  const again = await putArtifact(store, body(MIB, 2));
  if (again.created) throw new Error('dedupe failed');
  record('storage.artifact.dedupe_put', MIB / (Number(process.hrtime.bigint() - t) / 1e9), 'MiB/s');

  for (let i = 0; i < OBJECTS; i++) await store.put(`small/${i}`, Buffer.alloc(4096, i));
  const cache = await CachedStore.open({ remote: store, dir: join(dir, 'cache'), maxBytes: 1 << 30, logger });
  for (const label of ['miss', 'hit'] as const) {
    const times: number[] = [];
    for (let i = 0; i < OBJECTS; i++) {
      const s = process.hrtime.bigint();
      const lease = await cache.acquire(`small/${i}`);
      times.push(Number(process.hrtime.bigint() - s) / 1e6);
      await lease.release();
    }
    times.sort((a, b) => a - b);
    record(`storage.cache.${label}_p50`, percentile(times, 50), 'ms');
    record(`storage.cache.${label}_p99`, percentile(times, 99), 'ms');
  }
  await buffer(await cache.get('small/0'));
} finally {
  await rm(dir, { recursive: true, force: true });
}

for (const r of results) process.stderr.write(`${r.name.padEnd(34)} ${String(r.value).padStart(10)} ${r.unit}\n`);
for (const r of results) process.stdout.write(`BENCH_RESULT ${JSON.stringify(r)}\n`);
