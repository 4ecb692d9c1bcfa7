// Job and lease ids carry the model they belong to, so any edge isolate can route them to the
// right queue object without a lookup: `<model>:<32 hex>`.
import { MODEL_NAME } from "./caller.ts";

export function newId(model: string): string {
  return `${model}:${crypto.randomUUID().replaceAll("-", "")}`;
}

/** The model an id belongs to, or null when the id is not one of ours. */
export function modelOfId(id: string): string | null {
  const at = id.lastIndexOf(":");
  if (at <= 0) return null;
  const model = id.slice(0, at);
  const rest = id.slice(at + 1);
  if (!MODEL_NAME.test(model) || !/^[0-9a-f]{32}$/.test(rest)) return null;
  return model;
}
