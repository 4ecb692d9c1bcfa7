// Fetches a model's files by URL and refuses any whose sha256 differs from the registry's, with a cache
// hook keyed by url + sha256 (the browser backs it with IndexedDB). Runs in Node 20 and browsers:
// fetch and WebCrypto only; Node callers pass a fetch that also reads file:// URLs.
import type { ModelConfig } from "../config/model-config.ts";

export type FetchFn = (url: string, init?: { signal?: AbortSignal }) => Promise<Response>;

/** A download that sends no byte for this long is abandoned and tried again (a stalled connection never ends). */
export const STALL_MS = 20_000;
/** Downloads tried per file: a stall or network error gets a second chance; a wrong hash or HTTP error does not. */
const DOWNLOAD_TRIES = 2;

/** Where fetched files are kept between loads. A hit is hashed again before use, so a corrupt cache costs a download, never a wrong model. */
export interface ModelFileCache {
  get(url: string, sha256: string): Promise<Uint8Array | undefined>;
  put(url: string, sha256: string, bytes: Uint8Array): Promise<void>;
}

export class MemoryFileCache implements ModelFileCache {
  private readonly entries = new Map<string, Uint8Array>();
  async get(url: string, sha256: string): Promise<Uint8Array | undefined> {
    return this.entries.get(`${sha256} ${url}`);
  }
  async put(url: string, sha256: string, bytes: Uint8Array): Promise<void> {
    this.entries.set(`${sha256} ${url}`, bytes);
  }
}

export type ModelFileErrorCode = "integrity_mismatch" | "fetch_failed" | "no_files";

export class ModelFileError extends Error {
  readonly code: ModelFileErrorCode;
  constructor(code: ModelFileErrorCode, message: string) {
    super(message);
    this.name = "ModelFileError";
    this.code = code;
  }
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The folder a model's files live in: files.base_url (default "./<name>/") resolved against the
 * registry's own URL, so a registry beside its model folders works from disk, a CDN or a dev server alike.
 */
export function modelFolderUrl(spec: ModelConfig, registryUrl: string | URL): URL {
  const base = spec.files?.base_url ?? `./${spec.name}/`;
  return new URL(base.endsWith("/") ? base : `${base}/`, registryUrl);
}

/** Every file of a registry entry as the URL it loads from and its sha256 (what caches key on). */
export function modelFileUrls(spec: ModelConfig, registryUrl: string | URL): { url: string; sha256: string }[] {
  const files = spec.files;
  if (!files) return [];
  const folder = modelFolderUrl(spec, registryUrl);
  return [files.model, files.config, files.tokenizer, files.tokenizer_config]
    .filter((ref) => ref !== undefined)
    .map((ref) => ({ url: new URL(ref.path, folder).href, sha256: ref.sha256 }));
}

export interface FetchFileOptions {
  fetch?: FetchFn;
  cache?: ModelFileCache;
  /** How errors name the file, e.g. "sentiment/onnx/model.onnx". */
  label: string;
  /** Default STALL_MS. */
  stallMs?: number;
}

class HttpStatusError extends Error {}

/** The body at `url`, aborted when no byte arrives for `stallMs` (from the request, then between chunks). */
async function download(fetchFn: FetchFn, url: string, stallMs: number): Promise<Uint8Array> {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stall: (error: Error) => void = () => {};
  const stalled = new Promise<never>((_, reject) => {
    stall = reject;
  });
  stalled.catch(() => {}); // settled by a race below, or by nobody once the download is done
  const rearm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const error = new Error(`no data for ${stallMs / 1000} s`);
      abort.abort(error);
      stall(error);
    }, stallMs);
  };
  rearm();
  try {
    const response = await Promise.race([fetchFn(url, { signal: abort.signal }), stalled]);
    if (!response.ok) throw new HttpStatusError(`HTTP ${response.status} ${response.statusText}`.trim());
    if (!response.body) return new Uint8Array(await Promise.race([response.arrayBuffer(), stalled]));
    const reader = response.body.getReader();
    const chunks: Uint8Array[] = [];
    let length = 0;
    for (;;) {
      rearm();
      const { done, value } = await Promise.race([reader.read(), stalled]);
      if (done) break;
      chunks.push(value);
      length += value.byteLength;
    }
    const bytes = new Uint8Array(length);
    let at = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, at);
      at += chunk.byteLength;
    }
    return bytes;
  } finally {
    clearTimeout(timer);
  }
}

/** The file's bytes, from the cache or the network, after checking them against `sha256`. */
export async function fetchVerified(url: string, sha256: string, opts: FetchFileOptions): Promise<Uint8Array> {
  const cached = await opts.cache?.get(url, sha256);
  if (cached !== undefined && (await sha256Hex(cached)) === sha256) return cached;

  const fetchFn = opts.fetch ?? ((u: string, init?: { signal?: AbortSignal }) => fetch(u, init));
  let bytes: Uint8Array | undefined;
  for (let tryNo = 1; bytes === undefined; tryNo++) {
    try {
      bytes = await download(fetchFn, url, opts.stallMs ?? STALL_MS);
    } catch (error) {
      const retry = !(error instanceof HttpStatusError) && tryNo < DOWNLOAD_TRIES;
      if (!retry) {
        throw new ModelFileError(
          "fetch_failed",
          `could not fetch ${opts.label} from ${url}: ${(error as Error).message}`,
        );
      }
    }
  }
  const actual = await sha256Hex(bytes);
  if (actual !== sha256) {
    throw new ModelFileError(
      "integrity_mismatch",
      `refusing ${opts.label} from ${url}: sha256 is ${actual}, the registry expects ${sha256}`,
    );
  }
  await opts.cache?.put(url, sha256, bytes);
  return bytes;
}
