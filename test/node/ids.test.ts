import { describe, expect, it } from "vitest";
import { MAX_SHARDS, modelOfId, newId, parseQueueName, queueName, queueOfId } from "../../shared/protocol/ids.ts";

const HEX32 = "0123456789abcdef0123456789abcdef";

describe("newId / modelOfId", () => {
  it("round-trips the model", () => {
    for (const model of ["sentiment", "a", "bge-small.en_v1.5", "X".repeat(64)]) {
      expect(modelOfId(newId(model))).toBe(model);
    }
  });

  it("has the form <model>:<32 lowercase hex>", () => {
    expect(newId("sentiment")).toMatch(/^sentiment:[0-9a-f]{32}$/);
  });

  it("makes distinct ids", () => {
    const ids = new Set(Array.from({ length: 1_000 }, () => newId("m")));
    expect(ids.size).toBe(1_000);
  });

  it("accepts a well-formed id", () => {
    expect(modelOfId(`alpha:${HEX32}`)).toBe("alpha");
  });

  it.each([
    ["empty string", ""],
    ["no colon", `alpha${HEX32}`],
    ["empty model", `:${HEX32}`],
    ["empty hex", "alpha:"],
    ["31 hex digits", `alpha:${HEX32.slice(1)}`],
    ["33 hex digits", `alpha:${HEX32}0`],
    ["uppercase hex", `alpha:${HEX32.toUpperCase()}`],
    ["non-hex digit", `alpha:${HEX32.slice(1)}g`],
    ["a UUID with dashes", "alpha:01234567-89ab-cdef-0123-456789abcdef"],
    ["model starting with a dot", `.alpha:${HEX32}`],
    ["model with a slash", `a/b:${HEX32}`],
    ["model with a space", `a b:${HEX32}`],
    ["model of 65 characters", `${"a".repeat(65)}:${HEX32}`],
    ["two colons", `a:b:${HEX32}`],
    ["trailing newline", `alpha:${HEX32}\n`],
  ])("rejects %s", (_label, id) => {
    expect(modelOfId(id)).toBeNull();
  });
});

describe("sharded queues: queueName / parseQueueName / queueOfId", () => {
  it("names shard 0 after the model alone, so unsharded ids stay as they were", () => {
    expect(queueName("sentiment", 0)).toBe("sentiment");
    expect(queueName("sentiment")).toBe("sentiment");
    expect(queueName("sentiment", 3)).toBe("sentiment~3");
  });

  it("round-trips model and shard through a queue name and an id", () => {
    for (const shard of [0, 1, 9, 10, MAX_SHARDS - 1]) {
      const queue = queueName("bge-small.en_v1.5", shard);
      expect(parseQueueName(queue)).toEqual({ model: "bge-small.en_v1.5", shard });
      const id = newId(queue);
      expect(queueOfId(id)).toBe(queue);
      expect(modelOfId(id)).toBe("bge-small.en_v1.5");
    }
  });

  it.each([
    ["shard 0 spelt out", "alpha~0"],
    ["a leading zero", "alpha~01"],
    ["a shard past the limit", `alpha~${MAX_SHARDS}`],
    ["an empty shard", "alpha~"],
    ["a negative shard", "alpha~-1"],
    ["two tildes", "alpha~1~2"],
    ["no model", "~1"],
  ])("refuses %s", (_label, queue) => {
    expect(parseQueueName(queue)).toBeNull();
    expect(queueOfId(`${queue}:${HEX32}`)).toBeNull();
    expect(modelOfId(`${queue}:${HEX32}`)).toBeNull();
  });
});
