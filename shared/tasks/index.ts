// The tasks a model can be served as, by the name models/registry.json gives in `task`. loadModel calls
// createTask once per model; the worker only ever sees Task.run.
import { createFeatureExtraction } from "./feature-extraction.ts";
import type { Task, TaskContext } from "./task-types.ts";
import { createTensorTask } from "./tensor-task.ts";
import { createTextClassification } from "./text-classification.ts";
import { createTextGeneration } from "./text-generation.ts";

export const TASKS = {
  "text-classification": createTextClassification,
  "feature-extraction": createFeatureExtraction,
  tensor: createTensorTask,
  "text-generation": createTextGeneration,
} as const satisfies Record<string, (ctx: TaskContext) => Task>;
export type TaskName = keyof typeof TASKS;

export function createTask(task: string, ctx: TaskContext): Task {
  if (!Object.hasOwn(TASKS, task)) {
    throw new Error(`unknown task ${task}; this runner serves ${Object.keys(TASKS).join(", ")}`);
  }
  return TASKS[task as TaskName](ctx);
}

export { isTextTask } from "./input-checks.ts";
export type { ModelJsonConfig, Task, TaskContext } from "./task-types.ts";
export { createTokenizer, type TextTokenizer } from "./tokenizer.ts";
