// Waiting in the end-to-end suites for a state a real process reaches in its own time: polled, with a deadline
// of its own, so a check that never holds fails saying what it waited for (and stops polling) instead of
// running on past its test's timeout.

/** Polls `check` every 50 ms until it holds; throws "timed out waiting for `what`" after `ms`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${ms / 1000} s)`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
