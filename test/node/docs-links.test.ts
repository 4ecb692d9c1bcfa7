// The README and docs/ link to each other and to files in the repo: every relative link must name a file
// that exists and, with a #fragment, a heading of that page (GitHub's anchor for it), so moving a section
// from one page to another cannot leave a reference dangling.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = new URL("../../", import.meta.url).pathname;
const PAGES = [
  "README.md",
  "models/README.md",
  ...readdirSync(join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`),
];

/** The text outside fenced code blocks, where a `[x](y)` is a link rather than code. */
function prose(markdown: string): string {
  return markdown.replaceAll(/^```[\s\S]*?^```/gm, "");
}

/** GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces as hyphens. */
function headingAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replaceAll(/[^\p{L}\p{N}\s_-]/gu, "")
    .replaceAll(" ", "-");
}

function anchors(markdown: string): Set<string> {
  const headings = prose(markdown).match(/^#{1,6} .+$/gm) ?? [];
  return new Set(headings.map((h) => headingAnchor(h.replace(/^#+ /, ""))));
}

function links(markdown: string): string[] {
  return [...prose(markdown).matchAll(/!?\[[^\]]*\]\(([^)\s]+)\)/g)].map((m) => m[1] as string);
}

describe("links between the README and docs/", () => {
  it("turns headings into GitHub's anchors", () => {
    expect(headingAnchor("A burst spilling over to the GPU pool (`npm run bench:burst`)")).toBe(
      "a-burst-spilling-over-to-the-gpu-pool-npm-run-benchburst",
    );
    expect(headingAnchor("Running locally: `npm start`")).toBe("running-locally-npm-start");
  });

  it("finds the pages and their links", () => {
    expect(PAGES).toContain("docs/api.md");
    expect(links(readFileSync(join(ROOT, "README.md"), "utf8"))).toContain("docs/api.md");
  });

  for (const page of PAGES) {
    it(`${page}: every relative link names a file and a heading that exist`, () => {
      const markdown = readFileSync(join(ROOT, page), "utf8");
      const dangling: string[] = [];
      for (const target of links(markdown)) {
        if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
        const [path = "", fragment] = target.split("#");
        const file = path === "" ? join(ROOT, page) : join(ROOT, dirname(page), path);
        if (!existsSync(file)) dangling.push(`${target}: no file ${relative(ROOT, file)}`);
        else if (fragment !== undefined && file.endsWith(".md") && !anchors(readFileSync(file, "utf8")).has(fragment))
          dangling.push(`${target}: no heading #${fragment} in ${relative(ROOT, file)}`);
      }
      expect(dangling).toEqual([]);
    });
  }
});
