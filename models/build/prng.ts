// Seeded randomness for scripts/build-models.ts: the same seed gives the same models, byte for byte.
// Math.random and Date are never used in the build, so anyone re-running it gets identical files.

/** mulberry32: a small 32-bit generator, good enough to initialise weights and shuffle a data set. */
export function createRng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A Float64Array of `n` values drawn uniformly from [-scale, scale]. */
export function uniform(rng: () => number, n: number, scale: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng() * 2 - 1) * scale;
  return out;
}

/** Fisher-Yates shuffle of 0..n-1, driven by `rng`. */
export function permutation(rng: () => number, n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const tmp = order[i] as number;
    order[i] = order[j] as number;
    order[j] = tmp;
  }
  return order;
}
