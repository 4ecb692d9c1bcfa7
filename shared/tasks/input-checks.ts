// Which inputs of a call the workers would refuse, found before anything is queued: the edge's submit
// path (edge/submit.ts) runs each input through the parser the model's task runs on the workers, so bad
// input is refused the same way whoever would have run it. Pure: no tokenizer, no onnxruntime.
import type { ModelConfig } from "../config/model-config.ts";
import type { Parsed } from "./task-types.ts";
import { parseSentTensors } from "./tensor-inputs.ts";
import { parseGenerationItem } from "./text-generation-item.ts";
import { parseText } from "./text-item.ts";

export const TEXT_TASKS = ["text-classification", "feature-extraction"] as const;

export function isTextTask(task: string): boolean {
  return (TEXT_TASKS as readonly string[]).includes(task);
}

/** An input a worker would refuse: its position in the call and what to fix. */
export interface InputProblem {
  index: number;
  message: string;
}

/**
 * The refused inputs of a call, in order; none when all of them parse. Only models with files run the
 * shared tasks: a queue whose workers bring their own model takes any JSON. A tensor item is checked on
 * its own (shapes, datatypes, values); whether it fits the model's inputs only the worker's session knows.
 */
export function inputProblems(
  model: Pick<ModelConfig, "task" | "files" | "max_sequence_length">,
  inputs: readonly unknown[],
): InputProblem[] {
  if (model.task === "text-generation") {
    // `verify` and `resume` are the queue's own: the first turns the item into a check of a donor's output
    // (verification.ts), the second carries the tokens accepted before a redelivery (token-stream.ts). A caller's
    // resume would have a donor's honest run continue, and be judged by, tokens the model never chose.
    const own = problemsOf(inputs, (input) => {
      if (typeof input !== "object" || input === null) return { value: input };
      if ("verify" in input) {
        return { error: "verify is set by the queue on the runs that check a donor's output; leave it out" };
      }
      if ("resume" in input) {
        return { error: "resume is set by the queue when it redelivers an item mid-generation; leave it out" };
      }
      return { value: input };
    });
    if (own.length > 0 || model.files === undefined) return own;
  }
  if (model.files === undefined) return [];
  if (isTextTask(model.task)) return textProblems(inputs, model.max_sequence_length);
  if (model.task === "tensor") return problemsOf(inputs, parseSentTensors);
  // The prompt's token count needs the tokenizer: the worker checks it (an invalid_input naming what to lower).
  if (model.task === "text-generation") {
    return problemsOf(inputs, (input) => parseGenerationItem(input, model.max_sequence_length));
  }
  return [];
}

/** The inputs that are not texts a model with this max_sequence_length takes (parseText). */
export function textProblems(inputs: readonly unknown[], maxSequenceLength: number): InputProblem[] {
  return problemsOf(inputs, (input) => parseText(input, maxSequenceLength));
}

function problemsOf(inputs: readonly unknown[], parse: (input: unknown) => Parsed<unknown>): InputProblem[] {
  const problems: InputProblem[] = [];
  inputs.forEach((input, index) => {
    const parsed = parse(input);
    if ("error" in parsed) problems.push({ index, message: parsed.error });
  });
  return problems;
}
