// Hands a training job to models/build/train-encoders.py (PyTorch) and reads back what it wrote. The data
// arrives already tokenised, so the models train on exactly the ids the runners' tokenizer gives.
// Called by scripts/build-models.ts; only rebuilding the models needs Python, never CI or serving.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Debian's interpreter, where python3-torch, python3-onnx (and libopenblas0-pthread) install; PYTHON overrides it. */
const PYTHON = process.env.PYTHON ?? "/usr/bin/python3";

/** Writes `job` to DIR/job.json, runs the trainer (its output goes to ours), and returns DIR/train-log.json. */
export function runPythonJob(
  job: Record<string, unknown>,
  dir: string,
  script = "train-encoders.py",
): Record<string, unknown> {
  const SCRIPT = join(import.meta.dirname, script);
  const path = join(dir, "job.json");
  writeFileSync(path, JSON.stringify({ ...job, out: dir }));
  // One BLAS thread, as torch is set to one: sums in a fixed order, so a re-run gives the same weights.
  const env = { ...process.env, OPENBLAS_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };
  const run = spawnSync(PYTHON, [SCRIPT, path], { stdio: ["ignore", "inherit", "inherit"], env });
  if (run.error || run.status !== 0) {
    throw new Error(
      `${PYTHON} ${SCRIPT} failed (${run.error?.message ?? `exit ${run.status}`}); it needs PyTorch and onnx: ` +
        "apt-get install -y python3-torch python3-onnx libopenblas0-pthread (without OpenBLAS, Debian's torch uses the reference BLAS and trains ~20x slower)",
    );
  }
  return JSON.parse(readFileSync(join(dir, "train-log.json"), "utf8")) as Record<string, unknown>;
}
