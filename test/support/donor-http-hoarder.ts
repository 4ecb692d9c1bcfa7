// The `hoard-http` donor (test/support/donor-process.ts): over the documented HTTP lease protocol it asks
// for batches on as many long-polls at once as it likes, never answers one, and extends each lease every
// renew_after_ms for as long as the coordinator grants it; a slot whose lease is refused asks for another.
import type { Batch } from "../../shared/index.ts";
import type { DonorReport } from "./donor-answers.ts";
import { boundRequest, jsonOf } from "./donor-wire.ts";

export interface HoardOptions {
  coordinator: string;
  model: string;
  workerId: string;
  origin: string;
  localAddress: string | undefined;
  token: () => Promise<string>;
  report: DonorReport;
  /** Long-polls (and so leases) held at once. */
  concurrency: number;
  maxBatchSize: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs until the process ends. */
export async function hoardOverHttp(opts: HoardOptions): Promise<void> {
  const post = async (path: string, json: unknown) =>
    boundRequest(`${opts.coordinator}${path}`, {
      headers: { Authorization: `Bearer ${await opts.token()}`, Origin: opts.origin },
      json,
      localAddress: opts.localAddress,
    });

  const hold = async (batch: Batch) => {
    for (;;) {
      await sleep(Math.max(50, batch.renew_after_ms));
      const answer = await post(`/v1/leases/${encodeURIComponent(batch.lease_id)}/extend`, {}).catch(() => undefined);
      if (answer?.status !== 200) {
        opts.report.leases_lost++;
        return;
      }
      opts.report.extends++;
    }
  };

  const slot = async () => {
    for (;;) {
      const answer = await post("/v1/leases", {
        model: opts.model,
        worker_id: opts.workerId,
        pool: "browser",
        device: "wasm",
        max_batch_size: opts.maxBatchSize,
        max_concurrent_batches: 64,
        wait_ms: 10_000,
      }).catch((error: Error) => ({ status: 0, error }));
      if (answer.status === 204) continue;
      if (answer.status !== 200 || !("body" in answer)) {
        opts.report.errors++;
        const detail = "body" in answer ? jsonOf(answer)?.error?.message : answer.error.message;
        console.log(`lease request failed: ${answer.status} ${detail ?? ""}`);
        await sleep(1_000);
        continue;
      }
      const batch = jsonOf(answer) as Batch;
      opts.report.batches++;
      opts.report.items += batch.items.length;
      await hold(batch);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, slot));
}
