// Serialises a team's count-then-insert checks (limits and quotas): the transaction holds the team's row
// (PostgreSQL `FOR UPDATE`; SQLite has a single writer, so its transactions never interleave).

import type { Transaction } from 'kysely';
import { PreparedQuery } from './prepared.js';
import type { Database } from './schema.js';

/** The statement depends on the dialect only: one per kind, compiled on first use. */
const prepared = new Map<'sqlite' | 'postgres', PreparedQuery<[string], unknown>>();

export async function lockTeam(trx: Transaction<Database>, kind: 'sqlite' | 'postgres', teamId: string): Promise<void> {
  let q = prepared.get(kind);
  if (!q) {
    q = new PreparedQuery(trx, 1, (db, id: string) =>
      db
        .selectFrom('teams')
        .select('id')
        .where('id', '=', id)
        .$if(kind === 'postgres', (q) => q.forUpdate()),
    );
    prepared.set(kind, q);
  }
  await q.execute(trx, teamId);
}
