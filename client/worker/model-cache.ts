// The browser's model file cache: IndexedDB through idb-keyval, keyed by sha256 and URL, so a second
// page load (or a second tab) does not download a model again. Entries the registry no longer names are
// evicted; when IndexedDB is missing or over quota the files stay in memory, and loading still succeeds.
import { createStore, del, get, keys, set, type UseStore } from "idb-keyval";
import type { CacheCounts } from "../../shared/protocol/donor.ts";
import { MemoryFileCache, type ModelFileCache } from "../../shared/runner/model-files.ts";

const keyOf = (url: string, sha256: string) => `${sha256} ${url}`;

export class IdbModelCache implements ModelFileCache {
  readonly counts: CacheCounts = { hits: 0, misses: 0, memoryOnly: 0 };
  private readonly memory = new MemoryFileCache();
  private readonly store: UseStore | undefined;

  constructor(
    name = "edgeswarm-models",
    private readonly warn: (message: string) => void = console.warn,
  ) {
    try {
      const hasIndexedDb = (globalThis as { indexedDB?: unknown }).indexedDB !== undefined;
      this.store = hasIndexedDb ? createStore(name, "files") : undefined;
    } catch (error) {
      warn(`IndexedDB is unavailable (${(error as Error).message}); model files stay in memory`);
    }
  }

  async get(url: string, sha256: string): Promise<Uint8Array | undefined> {
    const inMemory = await this.memory.get(url, sha256);
    if (inMemory) return inMemory;
    let stored: Uint8Array | undefined;
    if (this.store) {
      try {
        stored = await get<Uint8Array>(keyOf(url, sha256), this.store);
      } catch (error) {
        this.warn(`reading the model cache failed (${(error as Error).message}); downloading instead`);
      }
    }
    if (stored) this.counts.hits++;
    else this.counts.misses++;
    return stored;
  }

  async put(url: string, sha256: string, bytes: Uint8Array): Promise<void> {
    if (this.store) {
      try {
        await set(keyOf(url, sha256), bytes, this.store);
        return;
      } catch (error) {
        // QuotaExceededError above all: the model still runs, it is just fetched again next time.
        this.warn(`could not keep ${url} in IndexedDB (${(error as Error).name}); keeping it in memory`);
      }
    }
    this.counts.memoryOnly++;
    await this.memory.put(url, sha256, bytes);
  }

  /** Deletes stored files the current registry does not name (a model moved on to new files or was dropped). */
  async retainOnly(wanted: readonly { url: string; sha256: string }[]): Promise<number> {
    if (!this.store) return 0;
    const keep = new Set(wanted.map((w) => keyOf(w.url, w.sha256)));
    let evicted = 0;
    try {
      for (const key of await keys<string>(this.store)) {
        if (keep.has(key)) continue;
        await del(key, this.store);
        evicted++;
      }
    } catch (error) {
      this.warn(`evicting old model files failed: ${(error as Error).message}`);
    }
    return evicted;
  }
}
