// Adam, the optimiser both bundled models are trained with (Kingma & Ba 2015), over flat Float64Arrays.
// Training runs in float64 for stable, reproducible sums; the weights are stored as float32 in the ONNX files.

export interface Param {
  value: Float64Array;
  grad: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

export function param(value: Float64Array): Param {
  const n = value.length;
  return { value, grad: new Float64Array(n), m: new Float64Array(n), v: new Float64Array(n) };
}

export interface AdamOptions {
  lr: number;
  /** L2 penalty added to every gradient: keeps weights of words seen once from growing without bound. */
  weightDecay: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

export class Adam {
  private step = 0;
  constructor(
    private readonly params: readonly Param[],
    private readonly opts: AdamOptions,
  ) {}

  zeroGrad(): void {
    for (const p of this.params) p.grad.fill(0);
  }

  /** One update; `scale` divides the accumulated gradients (1 / minibatch size). */
  update(scale: number): void {
    const { lr, weightDecay, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 } = this.opts;
    this.step++;
    const c1 = 1 - beta1 ** this.step;
    const c2 = 1 - beta2 ** this.step;
    for (const p of this.params) {
      for (let i = 0; i < p.value.length; i++) {
        const g = (p.grad[i] as number) * scale + weightDecay * (p.value[i] as number);
        const m = beta1 * (p.m[i] as number) + (1 - beta1) * g;
        const v = beta2 * (p.v[i] as number) + (1 - beta2) * g * g;
        p.m[i] = m;
        p.v[i] = v;
        p.value[i] = (p.value[i] as number) - (lr * (m / c1)) / (Math.sqrt(v / c2) + eps);
      }
    }
  }
}

/** Mean of the embedding rows of `ids` (every token counts: a single sentence has no padding). */
export function meanRows(table: Float64Array, dim: number, ids: readonly number[]): Float64Array {
  const out = new Float64Array(dim);
  for (const id of ids) for (let i = 0; i < dim; i++) out[i] = (out[i] as number) + (table[id * dim + i] as number);
  for (let i = 0; i < dim; i++) out[i] = (out[i] as number) / ids.length;
  return out;
}

/** Spreads a gradient on a mean back onto the rows it averaged. */
export function scatterMean(grad: Float64Array, dim: number, ids: readonly number[], dMean: Float64Array): void {
  for (const id of ids) {
    for (let i = 0; i < dim; i++)
      grad[id * dim + i] = (grad[id * dim + i] as number) + (dMean[i] as number) / ids.length;
  }
}

/** Softmax in place, shifted by the max so large logits do not overflow. */
export function softmax(logits: Float64Array): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (const z of logits) max = Math.max(max, z);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    logits[i] = Math.exp((logits[i] as number) - max);
    sum += logits[i] as number;
  }
  for (let i = 0; i < logits.length; i++) logits[i] = (logits[i] as number) / sum;
  return logits;
}
