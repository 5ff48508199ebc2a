// Serialises a team's count-then-insert checks (limits and quotas): the transaction holds the team's row
// (PostgreSQL `FOR UPDATE`; SQLite has a single writer, so its transactions never interleave).

import type { Transaction } from 'kysely';
import type { Database } from './schema.js';

export async function lockTeam(trx: Transaction<Database>, kind: 'sqlite' | 'postgres', teamId: string): Promise<void> {
  await trx
    .selectFrom('teams')
    .select('id')
    .where('id', '=', teamId)
    .$if(kind === 'postgres', (q) => q.forUpdate())
    .execute();
}
