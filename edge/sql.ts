// The one small typed helper every Durable Object uses for its SQLite storage, plus versioned migrations.
// Calls are synchronous: a DO runs one event at a time, so a run of statements without an await is atomic.

export type Row = Record<string, SqlStorageValue>;

/**
 * A LIMIT bound at run time. workerd's SQLite (3.47) reads a bare `LIMIT ?` while planning, so a statement
 * holding one was prepared again every time a value was bound to it, which is every run: 4% of a busy model
 * queue's CPU (seen with perf, a uprobe on sqlite3Reprepare). `? + 0` is an expression its planner leaves be.
 */
export const BOUND_LIMIT = "LIMIT ? + 0";

export class Sql {
  constructor(private readonly storage: SqlStorage) {}

  all<T extends Row>(query: string, ...bindings: SqlStorageValue[]): T[] {
    return this.storage.exec<T>(query, ...bindings).toArray();
  }

  /** The rows of a query by the value of their column `key`, each group in the rows' order. */
  grouped<T extends Row, K extends keyof T>(key: K, query: string, ...bindings: SqlStorageValue[]): Map<T[K], T[]> {
    const groups = new Map<T[K], T[]>();
    for (const row of this.all<T>(query, ...bindings)) {
      const group = groups.get(row[key]);
      if (group) group.push(row);
      else groups.set(row[key], [row]);
    }
    return groups;
  }

  one<T extends Row>(query: string, ...bindings: SqlStorageValue[]): T | undefined {
    return this.all<T>(query, ...bindings)[0];
  }

  /** Runs a statement; answers SQLite's rowsWritten, which counts index writes too (not a row count). */
  run(query: string, ...bindings: SqlStorageValue[]): number {
    return this.storage.exec(query, ...bindings).rowsWritten;
  }

  /** Applies each migration past the stored schema version, in order, and records the new version. */
  migrate(migrations: readonly string[]): void {
    this.storage.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    const current = Number(
      this.one<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'")?.value ?? 0,
    );
    for (let version = current; version < migrations.length; version++) {
      this.storage.exec(migrations[version] as string);
    }
    if (current < migrations.length) {
      this.run("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", String(migrations.length));
    }
  }

  getMeta(key: string): string | undefined {
    return this.one<{ value: string }>("SELECT value FROM meta WHERE key = ?", key)?.value;
  }

  setMeta(key: string, value: string): void {
    this.run("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value);
  }
}
