// Parse-once helpers: turn untrusted data into a typed value or a ProtocolError that says what to fix.
// Used at every boundary (HTTP bodies, WebSocket frames, worker results).
import { z } from "zod";
import { ErrorCode } from "./errors.ts";

export class ProtocolError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** Formats zod issues as `field: problem; field: problem`, the way a person fixes a request body. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => {
      const where = issue.path.length > 0 ? issue.path.join(".") : "body";
      return `${where}: ${issue.message}`;
    })
    .join("; ");
}

/**
 * A value JSON.parse made (every schema here validates parsed bodies and frames): JSON by construction, so it
 * is typed as JSON without z.json() walking each of its nodes again, which cost 5% of the coordinator's CPU
 * for a single-input call (bench:coordinator's profile) and grows with every input of a batch. Only a
 * missing field (undefined) is refused.
 */
export const ParsedJson = z.custom<z.core.util.JSONType>((value) => value !== undefined, "must be present");

/** Deeper JSON is refused before validation: recursive schemas would otherwise exhaust the stack. */
export const MAX_JSON_DEPTH = 64;

function depthExceeds(value: unknown, limit: number): boolean {
  // Iterative, so the check itself cannot overflow the stack.
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop() as [unknown, number];
    if (v === null || typeof v !== "object") continue;
    if (d >= limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return false;
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> | ProtocolError {
  if (depthExceeds(value, MAX_JSON_DEPTH)) {
    return new ProtocolError(ErrorCode.tooDeep, `invalid ${what}: JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
  }
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  return new ProtocolError(ErrorCode.validation, `invalid ${what}: ${describeIssues(result.error)}`);
}

export function parseJsonText(text: string, what: string): unknown | ProtocolError {
  try {
    return JSON.parse(text);
  } catch (error) {
    return new ProtocolError(ErrorCode.invalidJson, `${what} is not valid JSON: ${(error as Error).message}`);
  }
}
