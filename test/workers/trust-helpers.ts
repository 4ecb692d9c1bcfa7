// What the trust suites (trust.test.ts, donor-pool.test.ts) share: honest and lying classification
// answers, donors' client networks, submitting a call without waiting, a job once ended, a metric's value.
import { expect } from "vitest";
import { call, infer, scrape, waitFor } from "./helpers.ts";

/** What an honest text-classification worker answers for an input, and what a liar answers instead. */
export const honest = (x: unknown) => [
  { label: `L-${String(x)}`, score: 0.75 },
  { label: "OTHER", score: 0.25 },
];
export const lie = (x: unknown) => [
  { label: `L-${String(x)}`, score: 0.25 },
  { label: "OTHER", score: 0.75 },
];

/** Client networks as the route derives them from a connection's address (edge/client-address.ts). */
export const NET = { a: "10.0.1.0/24", b: "10.0.2.0/24", c: "10.0.3.0/24" };

/** Queues a call without waiting for it; answers its job id. */
export async function submit(model: string, inputs: unknown[], extra: Record<string, unknown> = {}): Promise<string> {
  const res = await infer({ model, inputs, wait: false, ...extra });
  expect(res.status).toBe(202);
  return res.body.id as string;
}

export const job = async (id: string) => (await call(`/v1/jobs/${id}`)).body;

/** The job once it has ended (succeeded, failed or expired). */
export const finished = (id: string, timeoutMs = 3_000) =>
  waitFor(async () => {
    const j = await job(id);
    return ["succeeded", "failed", "expired"].includes(j.status) ? j : undefined;
  }, timeoutMs);

/** A sample's value in /metrics (0 when absent). */
export async function metric(name: string, labels: string): Promise<number> {
  const text = (await scrape()).body as string;
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

export const inputsOf = (batch: { items: { input: unknown }[] }) => batch.items.map((i) => i.input);
