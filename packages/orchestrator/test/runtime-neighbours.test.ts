// A sandbox cannot fill the host's neighbour table. The IPv4 neighbour (ARP) table is one for the whole host,
// every network namespace included (kernel-budgets.ts): were the node's subnet on-link inside a sandbox, any
// process there — no capability needed — would add one entry per address it sends a packet to, and a tenant
// sending to a few thousand addresses a second would keep the table full and cut every other sandbox off. The
// slot has its address as a /32 with only the gateway on-link; here a sandbox sends to 3000 addresses of the
// node's subnet and beyond, and its namespace must still hold at most its gateway's entry.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { LinuxSandboxRuntime } from '../src/sandbox/linux-runtime.js';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { healthy, makeRuntime, sh, STAND_IN, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covtnb', vethPrefix: 'cnb-', subnet: '10.207.0.0/16' };

/** Entries in the host's one IPv4 neighbour table (all namespaces). */
const hostEntries = () => parseInt(readFileSync('/proc/net/stat/arp_cache', 'utf8').split('\n')[1]!.trim().split(/\s+/)[0]!, 16);

describe('the host neighbour table against a sandbox', { timeout: 180_000 }, () => {
  let rt: LinuxSandboxRuntime;
  let slot: SlotInfo;

  before(async () => {
    rt = makeRuntime(OPTS);
    await rt.prepare();
    await rt.cleanupOrphans([]);
    slot = await rt.boot({ templateId: 'base', diskMb: 128, limits: { vcpu: 0.5, memoryMb: 64 }, process: STAND_IN });
    await rt.claim(slot.slotId, { sandboxId: 'sbx-neigh', limits: { vcpu: 1, memoryMb: 128 }, allowInternetAccess: true });
  });

  after(async () => {
    if (slot) await rt.destroy(slot.slotId);
    await rt.teardownHost();
  });

  it('3000 destinations sent to from inside leave one entry in its namespace, and the sandbox still reachable', async () => {
    const ns = `${OPTS.instance}-${slot.slotId}`;
    const entries = async () => (await sh('ip', ['-n', ns, '-4', 'neigh', 'show'])).stdout.trim().split('\n').filter(Boolean);
    const before = hostEntries();
    // As the sandbox's root (no CAP_NET_ADMIN): UDP to 2000 addresses of the node's subnet, 1000 beyond it.
    // A fresh socket every 50 sends: packets waiting for an unresolved neighbour hold the socket's send buffer.
    const py = [
      'import socket',
      'n = 0',
      "dests = [('10.207.%d.%d' % (10 + i // 250, 2 + i % 250), 9) for i in range(2000)] + [('10.99.%d.%d' % (i // 250, 2 + i % 250), 9) for i in range(1000)]",
      'for k in range(0, len(dests), 50):',
      '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      '    s.setblocking(False)',
      '    for d in dests[k:k + 50]:',
      "        try: s.sendto(b'x', d); n += 1",
      '        except OSError: pass',
      '    s.close()',
      'print(n)',
    ].join('\n');
    const r = await rt.exec(slot.slotId, ['python3', '-c', py]);
    assert.equal(r.code, 0, r.stderr);
    const inside = await entries();
    assert.ok(inside.length <= 1, `the sandbox's namespace holds ${inside.length} neighbour entries: ${inside.slice(0, 5).join('; ')}`);
    // Every send was taken by the kernel: the entries, had they been made, would be there now.
    assert.ok(Number(r.stdout.trim()) > 2500, `sent ${r.stdout.trim()}`);
    // …and that one is the gateway's (the subnet's first address).
    assert.ok(inside.every((e) => e.startsWith('10.207.0.1 ')), inside.join('; '));
    // The host's table did not take the sandbox's sends (other namespaces may add a few meanwhile).
    assert.ok(hostEntries() - before < 50, `host neighbour entries ${before} → ${hostEntries()}`);
    // The /32 did not cut the sandbox off: the host reaches its server, whose answers go back through the gateway.
    assert.ok(await waitFor(() => healthy(slot.address), 10_000));
  });
});
