// Succeeded session jobs' inputs and outputs appended to their sessions' histories (edge/sessions), for the
// queue object (model-queue.ts) after each change. A job stays marked in storage until its session answered
// (appended, gone, or a duplicate: append keeps each job once), so one that fails now is tried again later.
import type { JobStore } from "./job-store.ts";

/** A session append that failed is tried again after this long (by the alarm, if nothing happens sooner). */
export const SESSION_RETRY_MS = 5_000;

type Entry = ReturnType<JobStore["sessionAppends"]>[number]["entry"];

export class SessionAppender {
  /** The appends under way, so two turns do not send the same job. */
  private appending: Promise<void> | undefined;

  constructor(
    private readonly jobs: JobStore,
    /** Appends one job's entry to the session object `ref` names. */
    private readonly append: (ref: string, entry: Entry) => Promise<unknown>,
    /** Keeps the appends alive past the request (the object's waitUntil). */
    private readonly background: (work: Promise<unknown>) => void,
    /** Called once a round of appends ends, to re-arm the alarm for what is left. */
    private readonly afterwards: () => void,
  ) {}

  /** When the alarm should try again, while some job still waits to be appended; else null. */
  retryAt(now: number): number | null {
    return this.jobs.hasSessionAppends() ? now + SESSION_RETRY_MS : null;
  }

  /** Starts appending what waits, unless a round is already under way. */
  run(): void {
    if (this.appending || !this.jobs.hasSessionAppends()) return;
    this.appending = (async () => {
      // Until none is left (jobs that finish meanwhile included), or a pass appends nothing: then the
      // alarm (retryAt) tries again.
      for (let progress = true; progress; ) {
        progress = false;
        for (const { ref, entry } of this.jobs.sessionAppends(16)) {
          try {
            await this.append(ref, entry);
            this.jobs.sessionAppended(entry.job_id);
            progress = true;
          } catch (error) {
            console.error(`appending job ${entry.job_id} to its session failed; will retry`, error);
          }
        }
      }
    })().finally(() => {
      this.appending = undefined;
      this.afterwards();
    });
    this.background(this.appending);
  }
}
