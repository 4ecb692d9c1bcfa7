// One Durable Object per session (see session-stub.ts for how a caller's key and session id name it):
// a JSON state document, a bounded history of the jobs run in the session, and a sliding expiry kept
// in SQLite and enforced on every access, with the alarm deleting what nobody came back for.
// Called by edge/routes/sessions.ts, and by the queue (attach, append) for jobs that name a session.
import { DurableObject } from "cloudflare:workers";
import type { HistoryEntry as SharedHistoryEntry } from "../../shared/protocol/sessions.ts";
import { loadConfig, type SessionConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { BOUND_LIMIT, Sql } from "../sql.ts";
import { applyMergePatch, type Json, type JsonObject } from "./merge-patch.ts";
import { entityTag, failedPrecondition, type PreconditionFailure, type Preconditions } from "./preconditions.ts";

/** One job run in the session, as the queue records it (its input and output are JSON values). */
export type HistoryEntry = SharedHistoryEntry & { input: Json; output: Json };

export interface SessionView {
  state: JsonObject;
  /** Oldest first; at most SESSION_HISTORY_LIMIT entries. */
  history: HistoryEntry[];
  /** Names the state's revision; history appended by jobs leaves it as it is. */
  etag: string;
  /** ms since the epoch; every read or write moves it to now + SESSION_TTL_MS. */
  expires_at: number;
}

export type WriteResult =
  | { kind: "written"; created: boolean; state: JsonObject; etag: string; expires_at: number }
  | { kind: "not_found" }
  | { kind: "precondition_failed"; failed: PreconditionFailure; etag: string | null }
  | { kind: "too_large"; bytes: number; limit: number };

export type DeleteResult =
  | { kind: "deleted" }
  | { kind: "not_found" }
  | { kind: "precondition_failed"; failed: PreconditionFailure; etag: string | null };

export type AppendResult =
  | { appended: true; history_length: number }
  | { appended: false; reason: "not_found" }
  /** This job is in the history already: delivery is at least once, so the queue may append twice. */
  | { appended: false; reason: "duplicate" }
  | { appended: false; reason: "too_large"; bytes: number; limit: number };

/** Input and output of one entry together, as JSON: well under the 2 MB a SQLite value may hold here. */
export const MAX_HISTORY_ENTRY_BYTES = 256 * 1024;

const MIGRATIONS = [
  `CREATE TABLE session (
     singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
     state TEXT NOT NULL,
     generation TEXT NOT NULL,
     revision INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   );
   CREATE TABLE history (
     seq INTEGER PRIMARY KEY,
     at INTEGER NOT NULL,
     model TEXT NOT NULL,
     job_id TEXT NOT NULL,
     input TEXT NOT NULL,
     output TEXT NOT NULL
   );
   CREATE UNIQUE INDEX history_job ON history (job_id);`,
  // Whether calls in the session may run on donors, who then see its state (issue 12): off unless asked.
  `ALTER TABLE session ADD COLUMN share_with_donors INTEGER NOT NULL DEFAULT 0;`,
] as const;

interface SessionRow extends Record<string, SqlStorageValue> {
  state: string;
  generation: string;
  revision: number;
  expires_at: number;
  share_with_donors: number;
}

const utf8Bytes = (text: string) => new TextEncoder().encode(text).byteLength;

export class SessionObject extends DurableObject<Env> {
  private readonly sql: Sql;
  /**
   * Whether the tables exist. Created on the first write rather than in the constructor, so that a read
   * of a session that never existed leaves no storage behind, and dropped again with everything else
   * when the session ends. undefined: not looked at yet in this instance.
   */
  private schema: boolean | undefined;
  /** The alarm time last set (null: none), to skip redundant setAlarm calls; read from storage once. */
  private alarmAt: number | null | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage.sql);
  }

  // ---- the queue's side ------------------------------------------------------------------------

  /** The state and history to run a job with, sliding the expiry; null when there is no live session. */
  async attach(): Promise<SessionView | null> {
    const now = Date.now();
    const row = await this.live(now);
    if (!row) return null;
    const expiresAt = await this.touch(now);
    return { state: JSON.parse(row.state), history: this.history(), etag: tagOf(row), expires_at: expiresAt };
  }

  /**
   * What a call made in the session needs: its state as JSON text, and whether the session lets donors
   * (untrusted browser workers, who see the state) run its calls. Slides the expiry; null when there is none.
   */
  async callContext(): Promise<{ state: string; shareWithDonors: boolean } | null> {
    const now = Date.now();
    const row = await this.live(now);
    if (!row) return null;
    await this.touch(now);
    return { state: row.state, shareWithDonors: row.share_with_donors === 1 };
  }

  /**
   * Records a job run in the session (once per job_id), dropping the oldest entries past the limit;
   * slides the expiry. `at` defaults to now.
   */
  async append(entry: Omit<HistoryEntry, "at"> & { at?: number }): Promise<AppendResult> {
    const now = Date.now();
    if (!(await this.live(now))) return { appended: false, reason: "not_found" };
    if (this.sql.one("SELECT 1 AS found FROM history WHERE job_id = ?", entry.job_id)) {
      await this.touch(now);
      return { appended: false, reason: "duplicate" };
    }
    const input = JSON.stringify(entry.input ?? null);
    const output = JSON.stringify(entry.output ?? null);
    const bytes = utf8Bytes(input) + utf8Bytes(output);
    if (bytes > MAX_HISTORY_ENTRY_BYTES) {
      return { appended: false, reason: "too_large", bytes, limit: MAX_HISTORY_ENTRY_BYTES };
    }
    const limit = this.settings().historyLimit;
    this.sql.run(
      "INSERT INTO history (at, model, job_id, input, output) VALUES (?, ?, ?, ?, ?)",
      entry.at ?? now,
      entry.model,
      entry.job_id,
      input,
      output,
    );
    // Keeps the newest `limit` rows (a limit lowered since is applied here too).
    this.sql.run(
      `DELETE FROM history WHERE seq NOT IN (SELECT seq FROM history ORDER BY seq DESC ${BOUND_LIMIT})`,
      limit,
    );
    await this.touch(now);
    const length = this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM history")?.n ?? 0;
    return { appended: true, history_length: length };
  }

  // ---- the caller's side -----------------------------------------------------------------------

  /**
   * Creates the session or replaces its state (its history stays). `shareWithDonors` sets whether donors
   * may run its calls; left out, a new session does not share and an existing one keeps its setting.
   */
  async put(state: JsonObject, conditions: Preconditions = {}, shareWithDonors?: boolean): Promise<WriteResult> {
    const now = Date.now();
    const row = await this.live(now);
    const failed = failedPrecondition(row ? tagOf(row) : null, conditions);
    if (failed) return { kind: "precondition_failed", failed, etag: row ? tagOf(row) : null };
    const result = await this.write(state, row, now);
    if (result.kind === "written" && shareWithDonors !== undefined) {
      this.sql.run("UPDATE session SET share_with_donors = ?", shareWithDonors ? 1 : 0);
    }
    return result;
  }

  /** Applies a JSON Merge Patch (RFC 7396) to the state of an existing session. */
  async patch(patch: JsonObject, conditions: Preconditions = {}): Promise<WriteResult> {
    const now = Date.now();
    const row = await this.live(now);
    if (!row) return { kind: "not_found" };
    const failed = failedPrecondition(tagOf(row), conditions);
    if (failed) return { kind: "precondition_failed", failed, etag: tagOf(row) };
    // An object patch always merges into an object, so the state stays one.
    return this.write(applyMergePatch(JSON.parse(row.state), patch) as JsonObject, row, now);
  }

  /** Deletes the session: state, history, alarm, and the storage itself. */
  async remove(conditions: Preconditions = {}): Promise<DeleteResult> {
    const row = await this.live(Date.now());
    if (!row) return { kind: "not_found" };
    const failed = failedPrecondition(tagOf(row), conditions);
    if (failed) return { kind: "precondition_failed", failed, etag: tagOf(row) };
    await this.wipe();
    return { kind: "deleted" };
  }

  // ---- expiry ----------------------------------------------------------------------------------

  /**
   * Fires at the expiry as it was when the alarm was set. Reads and writes since then have pushed the
   * expiry out without moving the alarm (one write fewer per access), so a session found still live is
   * given an alarm at its current expiry instead.
   */
  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    const row = await this.live(now);
    if (!row) {
      await this.wipe();
      return;
    }
    await this.armAlarm(row.expires_at);
  }

  // ---- storage ---------------------------------------------------------------------------------

  private settings(): SessionConfig {
    return loadConfig(this.env).sessions;
  }

  /** Brings the tables up to date if they exist, or creates them when `create`; answers whether they exist. */
  private open(create: boolean): boolean {
    if (this.schema === undefined) {
      const found = this.sql.one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'");
      if (found) this.sql.migrate(MIGRATIONS);
      this.schema = found !== undefined;
    }
    if (!this.schema && create) {
      this.sql.migrate(MIGRATIONS);
      this.schema = true;
    }
    return this.schema;
  }

  /**
   * The session, if it exists and has not expired. One past its expiry is deleted here and then, so a
   * late alarm never lets an expired session be read.
   */
  private async live(now: number): Promise<SessionRow | undefined> {
    if (!this.open(false)) return undefined;
    const row = this.sql.one<SessionRow>(
      "SELECT state, generation, revision, expires_at, share_with_donors FROM session",
    );
    if (row && row.expires_at <= now) {
      await this.wipe();
      return undefined;
    }
    return row;
  }

  private async write(state: JsonObject, row: SessionRow | undefined, now: number): Promise<WriteResult> {
    const { maxBytes, ttlMs } = this.settings();
    const text = JSON.stringify(state);
    const bytes = utf8Bytes(text);
    if (bytes > maxBytes) return { kind: "too_large", bytes, limit: maxBytes };
    const expiresAt = now + ttlMs;
    let written: SessionRow;
    if (row) {
      written = { ...row, state: text, revision: row.revision + 1, expires_at: expiresAt };
      this.sql.run("UPDATE session SET state = ?, revision = ?, expires_at = ?", text, written.revision, expiresAt);
    } else {
      this.open(true);
      // A session deleted and created again starts at revision 1 too: the generation keeps the old ETags stale.
      const generation = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
      written = { state: text, generation, revision: 1, expires_at: expiresAt, share_with_donors: 0 };
      this.sql.run(
        "INSERT INTO session (singleton, state, generation, revision, expires_at) VALUES (1, ?, ?, 1, ?)",
        text,
        generation,
        expiresAt,
      );
    }
    await this.armAlarm(expiresAt);
    return { kind: "written", created: !row, state, etag: tagOf(written), expires_at: expiresAt };
  }

  private history(): HistoryEntry[] {
    const rows = this.sql.all<{ at: number; model: string; job_id: string; input: string; output: string }>(
      `SELECT at, model, job_id, input, output FROM history ORDER BY seq DESC ${BOUND_LIMIT}`,
      this.settings().historyLimit,
    );
    return rows.reverse().map((r) => ({ ...r, input: JSON.parse(r.input), output: JSON.parse(r.output) }));
  }

  /** Slides the expiry to now + the TTL. */
  private async touch(now: number): Promise<number> {
    const expiresAt = now + this.settings().ttlMs;
    this.sql.run("UPDATE session SET expires_at = ?", expiresAt);
    await this.armAlarm(expiresAt);
    return expiresAt;
  }

  /** Makes sure an alarm fires by `at`: only ever moved earlier (see alarm()). */
  private async armAlarm(at: number): Promise<void> {
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  /** Deletes everything, so an ended session costs no storage. */
  private async wipe(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.alarmAt = null;
    this.schema = false;
  }
}

function tagOf(row: SessionRow): string {
  return entityTag(row.generation, row.revision);
}
