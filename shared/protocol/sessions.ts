// What the session endpoints and the session object share with their callers (edge/sessions, the SDK).

/** One call made in a session, as the session's history keeps it. */
export interface HistoryEntry {
  /** When the job finished, ms since the epoch. */
  at: number;
  model: string;
  job_id: string;
  input: unknown;
  output: unknown;
}
