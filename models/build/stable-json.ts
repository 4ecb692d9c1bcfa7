// JSON text for the generated model files, laid out the way `biome format` lays out JSON (2 spaces, objects
// expanded, short arrays of plain values on one line), so the repository's format check leaves them, and their hashes, alone.

const LINE_WIDTH = 120;

export function stableJson(value: unknown): string {
  return `${format(value, 0, 0)}\n`;
}

/** `prefix` is how many characters precede the value on its line (indent and key), to know whether an array fits. */
function format(value: unknown, indent: number, prefix: number): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const pad = " ".repeat(indent + 2);
  const close = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    if (value.every((v) => v === null || typeof v !== "object")) {
      const inline = `[${value.map((v) => JSON.stringify(v)).join(", ")}]`;
      // +1 for a trailing comma the line may carry.
      if (prefix + inline.length + 1 <= LINE_WIDTH) return inline;
    }
    return `[\n${value.map((v) => pad + format(v, indent + 2, pad.length)).join(",\n")}\n${close}]`;
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return "{}";
  const lines = entries.map(([key, v]) => {
    const head = `${pad}${JSON.stringify(key)}: `;
    return head + format(v, indent + 2, head.length);
  });
  return `{\n${lines.join(",\n")}\n${close}}`;
}
