// The Durable Objects' SQL as workerd's SQLite runs it. A bare `LIMIT ?` is read by its planner (3.47) while
// preparing, so each new value bound made the statement be prepared again on its next run (every run, as
// workerd binds each time): 4% of a busy queue's CPU under perf. edge/sql.ts BOUND_LIMIT is the form to use.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const EDGE = fileURLToPath(new URL("../../edge/", import.meta.url));

it("binds no LIMIT bare (edge/sql.ts BOUND_LIMIT instead)", () => {
  const bare: string[] = [];
  for (const entry of readdirSync(EDGE, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
    const file = join(entry.parentPath, entry.name);
    readFileSync(file, "utf8")
      .split("\n")
      .forEach((line, i) => {
        const comment = /^\s*(\*|\/\/)/.test(line);
        if (!comment && /\bLIMIT\s*\(?\s*\?(?!\s*\+\s*0)/i.test(line)) {
          bare.push(`${file.slice(EDGE.length)}:${i + 1}: ${line.trim()}`);
        }
      });
  }
  expect(bare).toEqual([]);
});
