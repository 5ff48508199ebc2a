// Serialises a team's count-then-insert checks (limits and quotas): the transaction holds the team's row
// (PostgreSQL `FOR UPDATE`; SQLite has a single writer, so its transactions never interleave).

import type { Transaction } from 'kysely';
import { PreparedQuery } from './prepared.js';
import type { Database } from './schema.js';

/** The statement depends on the dialect only: compiled on first use. */
let forUpdate: PreparedQuery<[string], unknown> | undefined;

export async function lockTeam(trx: Transaction<Database>, kind: 'sqlite' | 'postgres', teamId: string): Promise<void> {
  // On SQLite the select locked nothing (a read takes no lock a writer waits for; the single writer is what
  // serialises): one statement less in every create.
  if (kind === 'sqlite') return;
  forUpdate ??= new PreparedQuery(trx, 1, (db, id: string) => db.selectFrom('teams').select('id').where('id', '=', id).forUpdate());
  await forUpdate.execute(trx, teamId);
}
