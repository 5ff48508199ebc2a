// Queries built and compiled once, then run with new argument values: kysely builds an immutable query tree and
// compiles it to SQL on every call, which was about a third of the store's CPU in a sandbox create (docs/
// performance.md, "Control plane: creates/s"). Only for the hot paths; everything else builds its query per call.
//
// The query is built with stand-in strings for its arguments; compiling it yields the SQL and the parameter list,
// in which each stand-in marks where an argument goes. A stand-in that kysely did not turn into a parameter (it
// would be in the SQL text) fails at construction, so a query cannot silently run with a stand-in.

import type { Compilable, CompiledQuery, Kysely, QueryResult } from 'kysely';
import type { Database } from './schema.js';

const STAND_IN = '\u0000cove-prepared-argument:';

export class PreparedQuery<A extends readonly unknown[], R, DB = Database> {
  private readonly compiled: CompiledQuery<R>;
  /** Per parameter: the index of the argument it takes, or -1 for a constant kept from the build. */
  private readonly slots: number[];

  /**
   * `build` gets stand-ins typed as the arguments (`arity` of them); it must use each only as a value (compared,
   * inserted, set), never in a way that looks at it (`in` lists, branches on it).
   */
  constructor(db: Kysely<DB>, arity: number, build: (db: Kysely<DB>, ...args: A) => Compilable<R>) {
    const standIns = Array.from({ length: arity }, (_, i) => `${STAND_IN}${i}`) as unknown as A;
    this.compiled = build(db, ...standIns).compile();
    if (this.compiled.sql.includes(STAND_IN)) throw new Error('prepared query: an argument was inlined into the SQL');
    this.slots = this.compiled.parameters.map((p) => (typeof p === 'string' && p.startsWith(STAND_IN) ? Number(p.slice(STAND_IN.length)) : -1));
    for (let i = 0; i < arity; i++) if (!this.slots.includes(i)) throw new Error(`prepared query: argument ${i} is not a parameter`);
  }

  /** Runs the query on `db` (the store's Kysely or a transaction of it) with `args`. */
  execute(db: Kysely<DB>, ...args: A): Promise<QueryResult<R>> {
    const constants = this.compiled.parameters;
    const parameters = this.slots.map((slot, i) => (slot < 0 ? constants[i] : args[slot]));
    return db.executeQuery<R>({ query: this.compiled.query, sql: this.compiled.sql, parameters });
  }

  async rows(db: Kysely<DB>, ...args: A): Promise<R[]> {
    return (await this.execute(db, ...args)).rows;
  }
}
