// Which address a new slot gets: next-fit round the node's subnet, never one released less than
// ADDRESS_REUSE_AFTER_MS ago. A route to a sandbox's address that outlives it (the edge's one-hop route, a few
// seconds stale) must find nothing there, never the next sandbox (docs/decisions.md "A released sandbox address
// waits before it is reused"). The cursor and releases are an append-only log beside the slot records (ipv4.ts).

import type { Logger } from 'pino';
import { ADDRESS_REUSE_AFTER_MS, cursorLine, formatAllocation, hostIndexOf, nextFree, parseAllocation, releaseLine, type AllocationState, type Subnet } from './ipv4.js';
import { AddressPoolExhausted } from './runtime-errors.js';
import type { SlotStore } from './slot-store.js';

export class SlotAddresses {
  /** Allocation reads the slot records and the state, then writes both: one step at a time. */
  private chain: Promise<unknown> = Promise.resolve();
  /** Loaded from the log at first use. */
  private state: AllocationState | undefined;
  /** Lines in the log (an estimate after a restart), for its compaction. */
  private logLines = 0;
  /** Each slot record's address by slot id, as read: a slot keeps its address for its life. */
  private readonly known = new Map<string, string>();

  constructor(
    private readonly subnet: Subnet,
    private readonly slots: SlotStore,
    private readonly log: Logger,
  ) {}

  /**
   * Picks the next address and runs `persist` with it in the same step (the slot's record written), so the next
   * allocation sees it in use.
   */
  allocate<T>(persist: (address: string) => Promise<T>): Promise<T> {
    return this.serially(async () => {
      const used = await this.usedAddresses();
      const st = await this.load();
      const now = Date.now();
      // nextFree skips only releases still waiting; expired ones are dropped when the log is compacted, not here.
      const address = nextFree(this.subnet, used, st.cursor, st.released, now);
      if (!address) {
        const waiting = [...st.released.values()].filter((at) => now - at < ADDRESS_REUSE_AFTER_MS).length;
        throw new AddressPoolExhausted(this.subnet.cidr, waiting > 0 ? `${waiting} released less than ${ADDRESS_REUSE_AFTER_MS / 60_000} minutes ago` : undefined);
      }
      st.cursor = hostIndexOf(this.subnet, address)!;
      await this.append(cursorLine(address));
      return persist(address);
    });
  }

  /** The slot's address is released; call before its record goes, so no allocation sees it free and not released. */
  async release(slotId: string, address: string): Promise<void> {
    await this.serially(async () => {
      const st = await this.load();
      const at = Date.now();
      st.released.set(address, at);
      // Not saved is still kept in memory: only a restart would forget it.
      await this.append(releaseLine(address, at)).catch((err: unknown) => this.log.warn({ err, slotId }, 'cannot save a released address'));
    });
  }

  /**
   * The addresses of the slot records on disk now. The slot dirs are listed every time (a record that is there
   * holds its address, whoever wrote or removed it), but only the records not seen before are read: reading every
   * record made each boot cost O(slots) file reads, inside this one-at-a-time step.
   */
  private async usedAddresses(): Promise<Set<string>> {
    const ids = await this.slots.listIds();
    const present = new Set(ids);
    for (const id of this.known.keys()) if (!present.has(id)) this.known.delete(id);
    for (const id of ids) {
      if (this.known.has(id)) continue;
      const rec = await this.slots.read(id);
      if (rec) this.known.set(id, rec.address);
    }
    return new Set(this.known.values());
  }

  private serially<T>(step: () => Promise<T>): Promise<T> {
    const next = this.chain.then(step);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /**
   * The state as the process before left it. Without a usable cursor (a first boot, garbage, another subnet): after
   * the highest address in use, so a node that allocated lowest-first before does not hand out its just-released
   * low addresses.
   */
  private async load(): Promise<AllocationState> {
    if (this.state) return this.state;
    const text = await this.slots.readAddresses();
    const saved = parseAllocation(this.subnet, text ?? '', Date.now());
    this.logLines = text?.split('\n').length ?? 0;
    if (text !== null && saved.dropped) this.log.warn({ text: text.slice(0, 200) }, 'ignoring what is unusable in the saved address state');
    const cursor = saved.cursor ?? Math.max(1, ...(await this.slots.readAll()).map((r) => hostIndexOf(this.subnet, r.address) ?? 1));
    return (this.state = { cursor, released: saved.released });
  }

  /** One step appended to the log; once it holds far more lines than the state, it is written anew. */
  private async append(line: string): Promise<void> {
    const st = this.state!;
    if (++this.logLines > 2 * st.released.size + 4096) {
      const now = Date.now();
      for (const [a, at] of st.released) if (now - at >= ADDRESS_REUSE_AFTER_MS) st.released.delete(a);
      await this.slots.writeAddresses(formatAllocation(this.subnet, st));
      this.logLines = st.released.size + 1;
      return;
    }
    await this.slots.appendAddresses(line);
  }
}
