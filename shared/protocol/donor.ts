// Browser donors: a page's embed script trades its site key for a short-lived worker token
// (`POST /v1/donors/token`), valid only for the page origin the site allows and only in the browser pool.
import { z } from "zod";
import type { ModelConfig } from "../config/model-config.ts";

export const DonorTokenRequest = z.strictObject({
  site_key: z.string().min(1).max(128),
  /** The models the page offers to run; default all the site may run. */
  models: z.array(z.string().min(1).max(64)).max(64).optional(),
});
export type DonorTokenRequest = z.infer<typeof DonorTokenRequest>;

export interface DonorTokenResponse {
  token: string;
  /** Epoch ms after which the token no longer opens a connection; the worker asks for a new one before. */
  expires_at: number;
  /** Stable for this token; the coordinator quarantines by it. */
  donor_id: string;
  /** The registry entries this donor may serve, with their files and hashes. */
  models: ModelConfig[];
  /** Where relative model file paths resolve from. */
  registry_url: string;
}

/** What a browser donor's worker reports to its page (window.EdgeSwarm.status() and "status" events). */
export type DonorState = "idle" | "starting" | "running" | "paused" | "stopped" | "failed";

export interface DonorStatus {
  state: DonorState;
  /** Why the worker is paused ("hidden", "battery", "page", "duty cycle"), when it is. */
  pausedFor: string[];
  workerId: string;
  donorId?: string;
  models: { name: string; task: string; device: string; connected: boolean; batches: number; items: number }[];
  busyMs: number;
  cache: CacheCounts;
  gpuDeviceLost?: string;
  error?: string;
}

export interface CacheCounts {
  /** Files served from IndexedDB. */
  hits: number;
  /** Files that had to be downloaded. */
  misses: number;
  /** Files kept in memory only, because IndexedDB refused them (quota, private mode). */
  memoryOnly: number;
}
