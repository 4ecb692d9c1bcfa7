// tensor: raw KServe v2 tensors in, the model's outputs out, for any ONNX model. Items that agree on
// shape are concatenated along axis 0 into one run and the outputs split back by rows.
import type { ItemResult } from "../protocol/worker.ts";
import type { WireTensor } from "../runner/model-runner.ts";
import { elementCount } from "../runner/wire-tensor.ts";
import { invalidInput, merge, partition, type Task, type TaskContext } from "./task-types.ts";
import { parseTensorItem, type TensorItem } from "./tensor-inputs.ts";

export function createTensorTask(ctx: TaskContext): Task {
  const { session } = ctx;
  const runGroup = async (items: TensorItem[]): Promise<ItemResult[]> => {
    const outputs = await session.run(concatenate(items, session.inputNames));
    return splitOutputs(outputs, session.outputNames, items);
  };
  return {
    async run(inputs) {
      const { results, good } = partition(inputs, (input) =>
        parseTensorItem(input, session.inputNames, session.inputMetadata),
      );
      // Normally one group, so one run; items whose shapes differ beyond the batch axis cannot share a tensor.
      const groups = new Map<string, number[]>();
      good.forEach((g, i) => {
        const key = g.value.key ?? `alone ${i}`;
        groups.set(key, [...(groups.get(key) ?? []), i]);
      });
      const batch: ItemResult[] = new Array(good.length);
      for (const members of groups.values()) {
        const items = members.map((i) => (good[i] as (typeof good)[number]).value);
        const out = await runGroup(items).catch((error: Error) => isolate(items, runGroup, error));
        members.forEach((m, j) => {
          batch[m] = out[j] as ItemResult;
        });
      }
      return merge(
        results,
        good.map((g) => g.index),
        batch,
      );
    },
  };
}

/**
 * A failed batched run is retried one item at a time, so an input the model rejects at run time (a size
 * its graph cannot take) fails alone. If every item fails the same way the fault is not theirs: rethrow.
 */
async function isolate(
  items: TensorItem[],
  runGroup: (items: TensorItem[]) => Promise<ItemResult[]>,
  error: Error,
): Promise<ItemResult[]> {
  if (items.length === 1) throw error;
  const settled = await Promise.allSettled(items.map((item) => runGroup([item])));
  if (settled.every((s) => s.status === "rejected")) throw error;
  return settled.map((s) =>
    s.status === "fulfilled"
      ? (s.value[0] as ItemResult)
      : invalidInput(`the model could not run this input: ${(s.reason as Error).message}`),
  );
}

function concatenate(items: TensorItem[], inputNames: readonly string[]): Record<string, WireTensor> {
  const feeds: Record<string, WireTensor> = {};
  for (const name of inputNames) {
    const parts = items.map((item) => item.tensors[name] as WireTensor);
    const first = parts[0] as WireTensor;
    const rows = parts.reduce((sum, t) => sum + (t.shape[0] ?? 0), 0);
    const data =
      items.length === 1 ? first.data : ((parts.map((t) => t.data) as number[][]).flat() as number[] | boolean[]);
    feeds[name] = {
      name,
      datatype: first.datatype,
      shape: items.length === 1 ? first.shape : [rows, ...first.shape.slice(1)],
      data,
    };
  }
  return feeds;
}

/** Each item's slice of every output, in the model's output order; row-major, so a row block is contiguous. */
function splitOutputs(
  outputs: Record<string, WireTensor>,
  outputNames: readonly string[],
  items: TensorItem[],
): ItemResult[] {
  const ordered = outputNames.map((n) => outputs[n]).filter((t): t is WireTensor => t !== undefined);
  if (items.length === 1) return [{ output: ordered.map(plain) }];
  const total = items.reduce((sum, item) => sum + item.rows, 0);
  const unsplittable = ordered.find((t) => t.shape[0] !== total);
  if (unsplittable) {
    throw new Error(
      `output ${unsplittable.name} has shape [${unsplittable.shape.join(", ")}], no batch axis of ${total} rows to split`,
    );
  }
  let offset = 0;
  return items.map((item) => {
    const start = offset;
    offset += item.rows;
    const output = ordered.map((t) => {
      const rowSize = elementCount(t.shape.slice(1));
      const data = t.data.slice(start * rowSize, (start + item.rows) * rowSize) as number[] | boolean[];
      return plain({ name: t.name, datatype: t.datatype, shape: [item.rows, ...t.shape.slice(1)], data });
    });
    return { output };
  });
}

/** A fresh object literal: ItemResult's JSON type takes plain records, not interface instances. */
function plain(t: WireTensor) {
  return { name: t.name, shape: t.shape, datatype: t.datatype, data: t.data };
}
