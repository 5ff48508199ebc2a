// Opens the store: SQLite (better-sqlite3, WAL) by default, PostgreSQL when the URL says so; the same kysely
// queries run on both. Migrations run on open.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, type SqliteDatabase as KyselySqlite } from 'kysely';
import pg from 'pg';
import type { DbConfig } from '../config.js';
import { migrationProvider } from './migrations.js';
import type { Database } from './schema.js';

export interface Db {
  kysely: Kysely<Database>;
  kind: DbConfig['kind'];
  close(): Promise<void>;
}

const INT8_OID = 20;

/** Statements kept prepared; the store's queries are a few hundred distinct texts at most. */
const STATEMENT_CACHE_SIZE = 500;

/**
 * kysely's SQLite driver prepares every query anew, which was the largest single cost of a create (about a
 * tenth of its CPU). Statements are kept by their SQL text, least recently used dropped first. Reusing one is
 * safe: better-sqlite3 resets a statement after each run, re-prepares it itself after a schema change, and
 * kysely's single-connection mutex means no two queries (nor a stream's iteration and a query) share it at once.
 */
export function withStatementCache(database: KyselySqlite, size = STATEMENT_CACHE_SIZE): KyselySqlite {
  const cache = new Map<string, ReturnType<KyselySqlite['prepare']>>();
  return {
    close: () => database.close(),
    prepare(sql) {
      let stmt = cache.get(sql);
      if (stmt) {
        cache.delete(sql);
      } else {
        stmt = database.prepare(sql);
        if (cache.size >= size) cache.delete(cache.keys().next().value!);
      }
      cache.set(sql, stmt);
      return stmt;
    },
  };
}

/** A connection to the store without migrating it (openDatabase migrates; tests build old schemas with this). */
export function connectDatabase(config: DbConfig): Kysely<Database> {
  let kysely: Kysely<Database>;
  if (config.kind === 'sqlite') {
    if (config.path !== ':memory:') mkdirSync(dirname(config.path), { recursive: true });
    const database = new SqliteDatabase(config.path);
    database.pragma('journal_mode = WAL');
    // With WAL, NORMAL never corrupts the database; a power cut may lose the last commits, which the evictor and
    // the nodes' own expiry tolerate. FULL would fsync on every commit.
    database.pragma('synchronous = NORMAL');
    database.pragma('busy_timeout = 5000');
    database.pragma('foreign_keys = ON');
    kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) });
  } else {
    // Epoch-millisecond bigints fit in a double for the next 285 000 years: read them as numbers.
    const types = {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    };
    const pool = new pg.Pool({ connectionString: config.url, types, max: 10 });
    kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  }
  return kysely;
}

export async function openDatabase(config: DbConfig): Promise<Db> {
  const kysely = connectDatabase(config);
  const { error, results } = await new Migrator({ db: kysely, provider: migrationProvider }).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    await kysely.destroy();
    throw new Error(`store migration failed${failed ? ` (${failed.migrationName})` : ''}`, { cause: error });
  }
  return { kysely, kind: config.kind, close: () => kysely.destroy() };
}
