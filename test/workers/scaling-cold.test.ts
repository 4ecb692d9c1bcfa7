// /v1/scaling from an isolate that has never read the queues (a fresh deploy, an evicted isolate) while
// one queue object is busy: the answer still comes within KEDA's timeout, with that model unavailable.
// Its own file, so that no earlier test in this isolate has read the queues.
import { runInDurableObject } from "cloudflare:test";
import { expect, it } from "vitest";
import { call, infer, queue, sleep } from "./helpers.ts";

it("answers within KEDA's timeout with a busy queue it never read reported unavailable", async () => {
  await infer({ model: "alpha", inputs: [1], wait: false });
  let held = true;
  const busy = runInDurableObject(queue("bravo"), (_instance, state) =>
    state.blockConcurrencyWhile(() => sleep(4_000)),
  ).finally(() => {
    held = false;
  });
  await sleep(100);
  const res = await call("/v1/scaling");
  expect(held).toBe(true); // answered without waiting for the object, whatever this machine's speed
  expect(res.status).toBe(200);
  expect(res.body.unavailable).toEqual(["bravo"]);
  expect(res.body.models.alpha.queued).toBe(1);
  expect(res.body.models.bravo).toBeUndefined();
  await busy;
});
