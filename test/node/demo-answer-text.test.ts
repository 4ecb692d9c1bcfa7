// The demo page's answers in words (client/demo/answer-text.ts): a classifier's top label and score, an
// embedding's length, the coordinator's own message for an error.
import { describe, expect, it } from "vitest";
import { describeAnswer, describeOutput } from "../../client/demo/answer-text.ts";

describe("the demo page's answers", () => {
  it("gives a classifier's top label with its score as a percentage, and the time taken", () => {
    const body = {
      id: "sentiment:1",
      outputs: [
        [
          { label: "NEGATIVE", score: 0.00022 },
          { label: "POSITIVE", score: 0.99978 },
        ],
      ],
      timings: { queued_ms: 6, compute_ms: 4.7, total_ms: 17.4 },
    };
    expect(describeAnswer(200, body)).toBe("POSITIVE 99.9% — in 17 ms");
    expect(describeOutput([{ label: "NEGATIVE", score: 0.9969 }])).toBe("NEGATIVE 99.6%");
  });

  it("says how long an embedding is rather than printing it", () => {
    expect(describeOutput([0.1, -0.2, 0.3])).toBe("a vector of 3 numbers");
  });

  it("passes the coordinator's message on for an error", () => {
    const body = { error: { code: "queue_full", message: "the queue of sentiment is full; retry after 1 s" } };
    expect(describeAnswer(429, body)).toBe("Not answered (429): the queue of sentiment is full; retry after 1 s");
    expect(describeAnswer(502, undefined)).toBe("Not answered (502): no message");
  });
});
