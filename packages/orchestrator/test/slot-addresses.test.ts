// Which address a new slot gets (slot-addresses.ts), against a real slot store in a temp dir: an address a record on
// disk holds is never handed out, whoever wrote that record; a slot whose dir is gone gives its address up; and a
// boot reads only the records it has not seen before, not every slot's (a node of 1,500 slots paid ~170 ms of CPU a
// boot for that, inside the one-at-a-time allocation step).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { parseSubnet } from '../src/sandbox/ipv4.js';
import { SlotAddresses } from '../src/sandbox/slot-addresses.js';
import { SlotStore, type SlotRecord } from '../src/sandbox/slot-store.js';

/** A slot store that counts its record reads. */
class CountingStore extends SlotStore {
  reads = 0;
  override async read(slotId: string): Promise<SlotRecord | null> {
    this.reads++;
    return super.read(slotId);
  }
}

const record = (slotId: string, address: string) => ({ slotId, address, templateId: 'base', diskMb: 1, pid: 0, initToken: 't', state: 'booting', pidStartTime: null, loopDevice: null, lowerdir: '/x' }) as unknown as SlotRecord;

describe('slot addresses', () => {
  let dir: string;
  let store: CountingStore;
  let addresses: SlotAddresses;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cove-slot-addresses-'));
    store = new CountingStore(join(dir, 'slots'));
    addresses = new SlotAddresses(parseSubnet('10.77.0.0/28'), store, pino({ level: 'silent' }));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  let n = 0;
  const boot = () => addresses.allocate(async (address) => {
    const id = `slot${++n}`;
    await store.write(record(id, address));
    return { id, address };
  });

  it('hands out distinct addresses, each boot reading only the record it has not seen', async () => {
    const got = [];
    for (let i = 0; i < 3; i++) {
      const before = store.reads;
      got.push(await boot());
      assert.ok(store.reads - before <= 1, `boot ${i + 1} read ${store.reads - before} records`);
    }
    assert.equal(new Set(got.map((g) => g.address)).size, 3);
  });

  it('never hands out an address a record on disk holds, whoever wrote it', async () => {
    // Written beside the allocator (a record a previous process left): the next free address by next-fit.
    const taken = (await boot()).address;
    const parts = taken.split('.');
    const next = `${parts[0]}.${parts[1]}.${parts[2]}.${Number(parts[3]) + 1}`;
    await store.write(record('outside1', next));
    const after = await boot();
    assert.notEqual(after.address, next);
    assert.notEqual(after.address, taken);
  });

  it('an address whose record is gone is free again; the others stay taken', async () => {
    // Fill the /28 (13 sandbox addresses: network, gateway and broadcast aside).
    for (;;) {
      try {
        await boot();
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'runtime_address_pool_exhausted');
        break;
      }
    }
    // A slot's dir removed without a release (as a sweep of a half-made slot does): its address is free at once.
    const gone = (await store.read('slot2'))!.address;
    await rm(store.dirOf('slot2'), { recursive: true });
    assert.equal((await boot()).address, gone);
    await assert.rejects(boot(), (err: unknown) => (err as { code?: string }).code === 'runtime_address_pool_exhausted');
  });
});
