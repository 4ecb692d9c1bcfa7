// W3C trace context helpers: what a traceparent header is, and the spans made from it.
import { describe, expect, it } from "vitest";
import { childTraceparent, parseTraceparent, traceparentOrNew } from "../../shared/index.ts";

const CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

describe("traceparent", () => {
  it("reads a valid header, in either case, and refuses malformed or all-zero ones", () => {
    expect(parseTraceparent(CALLER)).toEqual({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      spanId: "00f067aa0ba902b7",
      flags: "01",
    });
    expect(parseTraceparent(CALLER.toUpperCase())?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    for (const bad of [
      undefined,
      "",
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
      `00-4bf92f3577b34da6a3ce929d0e0e4736-${"0".repeat(16)}-01`,
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ]) {
      expect(parseTraceparent(bad)).toBeNull();
    }
  });

  it("makes a child span in the same trace with the same flags", () => {
    const child = childTraceparent(CALLER) as string;
    const c = parseTraceparent(child);
    expect(c?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(c?.flags).toBe("01");
    expect(c?.spanId).not.toBe("00f067aa0ba902b7");
    expect(childTraceparent("garbage")).toBeNull();
  });

  it("keeps a call's traceparent and starts a sampled trace for a call without one", () => {
    expect(traceparentOrNew(CALLER)).toBe(CALLER);
    const fresh = parseTraceparent(traceparentOrNew("not a traceparent"));
    expect(fresh?.flags).toBe("01");
    expect(fresh?.traceId).not.toBe(parseTraceparent(traceparentOrNew(undefined))?.traceId);
  });

  it("gives every span its own id, across many refills of its random bytes", () => {
    // 8 bytes a span: 2,000 spans draw the 4 KB pool of random bytes about four times over.
    const spans = Array.from({ length: 2_000 }, () => parseTraceparent(childTraceparent(CALLER))?.spanId);
    expect(spans.every((s) => s !== undefined && /^[0-9a-f]{16}$/.test(s))).toBe(true);
    expect(new Set(spans).size).toBe(spans.length);
  });
});
