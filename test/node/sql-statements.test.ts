// The Durable Objects' SQL as workerd's SQLite runs it. A LIMIT bound bare (`LIMIT ?`, `LIMIT :n`, the count of
// `LIMIT 5, ?`) is read by its planner (3.47) while preparing, so each value bound made the statement be prepared
// again on its next run (every run, as workerd binds each time): 4% of a busy queue's CPU under perf. edge/sql.ts
// BOUND_LIMIT is the form to use. SQL is written in capitals here, so `limit ?? 10` in code is not SQL.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const EDGE = fileURLToPath(new URL("../../edge/", import.meta.url));

/** A LIMIT whose count is a bare parameter, across lines too; `? + 0` (BOUND_LIMIT) is not bare. */
const BARE = /\bLIMIT\s+(?:\d+\s*,\s*)?\(?\s*[?:@$]\w*\s*\)?(?!\s*\+\s*0\b)/g;

/** The file's text without comments (a block comment, or a line comment after code), lines kept. */
function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, " ")).replace(/(^|[^:])\/\/[^\n]*/g, "$1");
}

function bareLimits(text: string): string[] {
  const code = withoutComments(text);
  return [...code.matchAll(BARE)].map((m) => `line ${code.slice(0, m.index).split("\n").length}: ${m[0]}`);
}

it("finds a bare LIMIT however it is written", () => {
  expect(bareLimits("sql.exec(`SELECT 1 FROM t LIMIT ?`)")).toHaveLength(1);
  expect(bareLimits("`SELECT a\n  FROM t ORDER BY a LIMIT\n  ?`")).toEqual(["line 2: LIMIT\n  ?"]);
  expect(bareLimits("`... LIMIT (?)`, `... LIMIT ?1`, `... LIMIT :n`, `... LIMIT 10, ?`")).toHaveLength(4);
  expect(bareLimits("`... LIMIT ? + 0`, `LIMIT 1`, limit ?? 10, /* LIMIT ? */ x // LIMIT ?")).toEqual([]);
});

it("binds no LIMIT bare in edge/ (edge/sql.ts BOUND_LIMIT instead)", () => {
  const bare: string[] = [];
  for (const entry of readdirSync(EDGE, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
    const file = join(entry.parentPath, entry.name);
    for (const found of bareLimits(readFileSync(file, "utf8"))) bare.push(`${file.slice(EDGE.length)} ${found}`);
  }
  expect(bare).toEqual([]);
});
