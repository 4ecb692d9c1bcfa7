// What the Chromium suites share: calls to the coordinator's caller API, waiting on a tab's donor status,
// and checking a tab's answers against the same model run by onnxruntime-node.
import type { Page } from "playwright-core";
import { expect } from "vitest";
import type { DonorStatus } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";

export const API = { Authorization: "Bearer k", "Content-Type": "application/json" };

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The caller API of the coordinator at `url`, with the test's key. */
export function callerApi(url: () => string) {
  async function infer(model: string, inputs: unknown[], wait = true) {
    const res = await fetch(`${url()}/v1/infer`, {
      method: "POST",
      headers: API,
      body: JSON.stringify({ model, inputs, wait, timeout_ms: 60_000 }),
    });
    return { status: res.status, body: (await res.json()) as any };
  }
  async function job(id: string) {
    const res = await fetch(`${url()}/v1/jobs/${id}`, { headers: API });
    return (await res.json()) as any;
  }
  /** The job once it has ended (succeeded, failed or expired), or its last view after `ms`. */
  async function settled(id: string, ms = 30_000) {
    const deadline = Date.now() + ms;
    let view: any;
    do {
      view = await job(id);
      if (["succeeded", "failed", "expired"].includes(view.status)) return view;
      await sleep(100);
    } while (Date.now() < deadline);
    return view;
  }
  return { infer, job, settled };
}

/** Every output within `tolerance` of onnxruntime-node's answer for the same input. */
export async function expectMatchesNode(
  reference: Map<string, LoadedModel>,
  model: string,
  inputs: unknown[],
  outputs: unknown[],
  tolerance: number,
) {
  const expected = await (reference.get(model) as LoadedModel).run(inputs);
  expect(outputs).toHaveLength(inputs.length);
  outputs.forEach((output, i) => {
    const want = expected[i] as { output: unknown };
    if (reference.get(model)?.task === "text-classification") {
      const got = output as { label: string; score: number }[];
      const ref = want.output as { label: string; score: number }[];
      expect(got.map((g) => g.label)).toEqual(ref.map((r) => r.label));
      got.forEach((g, j) => {
        expect(Math.abs(g.score - (ref[j]?.score ?? Number.NaN))).toBeLessThan(tolerance);
      });
    } else {
      const got = output as number[];
      const ref = want.output as number[];
      expect(got).toHaveLength(ref.length);
      got.forEach((g, j) => {
        expect(Math.abs(g - (ref[j] ?? Number.NaN))).toBeLessThan(tolerance);
      });
    }
  });
}

/** The tab's donor status, once `ready` says it is what we wait for. */
export async function waitForStatus(
  page: Page,
  ready: (s: DonorStatus) => boolean,
  timeoutMs = 60_000,
): Promise<DonorStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: DonorStatus | undefined;
  while (Date.now() < deadline) {
    last = (await page.evaluate("window.EdgeSwarm?.status()")) as DonorStatus | undefined;
    if (last?.state === "failed") throw new Error(`the donor failed: ${last.error}`);
    if (last && ready(last)) return last;
    await sleep(100);
  }
  // The tab's own log lines (where its page records them in window.__logs) say which step it was stuck in.
  const logs = await page.evaluate("(window.__logs ?? []).slice(-20)").catch(() => []);
  throw new Error(`donor status not reached in time; last: ${JSON.stringify(last)}; log: ${JSON.stringify(logs)}`);
}

export const itemsDone = (s: DonorStatus) => s.models.reduce((n, m) => n + m.items, 0);
