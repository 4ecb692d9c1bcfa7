// CPU profiles of the coordinator, for finding where its time goes under a bench's load: the V8 sampling
// profiler of workerd, reached through wrangler dev's DevTools inspector (`Profiler.start` / `Profiler.stop`).
// The profile is written as a `.cpuprofile` (opens in Chrome DevTools or speedscope) and summarised as the
// functions with the most self time.
import { writeFile } from "node:fs/promises";
import WebSocket from "ws";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** How often the profiler samples, in µs. */
const SAMPLING_INTERVAL_US = 200;

/** One DevTools session on the coordinator's worker; `call` sends a method and resolves with its result. */
async function inspect(inspectorPort: number): Promise<{
  call: (method: string, params?: object) => Promise<unknown>;
  close: () => void;
}> {
  const targets = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  const target = targets[0];
  if (!target) throw new Error(`the inspector on port ${inspectorPort} lists no target`);
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  ws.on("message", (data) => {
    const msg = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
    const waiter = msg.id === undefined ? undefined : pending.get(msg.id);
    if (!waiter || msg.id === undefined) return;
    pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(msg.error.message));
    else waiter.resolve(msg.result);
  });
  return {
    call: (method, params = {}) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        ws.send(JSON.stringify({ id, method, params }));
      }),
    close: () => ws.close(),
  };
}

/** Starts the profiler; the function it resolves with stops it and resolves with the profile. */
export async function startCpuProfile(inspectorPort: number): Promise<() => Promise<CpuProfile>> {
  const session = await inspect(inspectorPort);
  await session.call("Profiler.enable");
  await session.call("Profiler.setSamplingInterval", { interval: SAMPLING_INTERVAL_US });
  await session.call("Profiler.start");
  return async () => {
    try {
      const { profile } = (await session.call("Profiler.stop")) as { profile: CpuProfile };
      return profile;
    } finally {
      session.close();
    }
  };
}

/**
 * The functions with the most self time, as table lines: share of the busy samples, ms, function and place.
 * Each sample counts as one sampling interval: workerd's profiler takes none while the isolate waits for I/O, so
 * the time to the next sample (`timeDeltas`) holds the wait, and weighting by it credited every idle gap to
 * whatever ran just before it (a long-idle coordinator's profile read as SQLite's or zod's cost).
 */
export function topSelfTime(profile: CpuProfile, count = 25): string[] {
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const counts = new Map<string, number>();
  let busy = 0;
  for (const id of profile.samples ?? []) {
    const node = byNode.get(id);
    if (!node || node.callFrame.functionName === "(idle)") continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || "(anonymous)"} ${url.split("/").slice(-2).join("/")}:${lineNumber + 1}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    busy++;
  }
  return [
    `${busy} busy samples of ${SAMPLING_INTERVAL_US} µs (${((busy * SAMPLING_INTERVAL_US) / 1000).toFixed(0)} ms of the isolate's time)`,
    ...[...counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(
        ([key, n]) =>
          `${((n / busy) * 100).toFixed(1).padStart(5)}%  ${((n * SAMPLING_INTERVAL_US) / 1000).toFixed(0).padStart(6)} ms  ${key}`,
      ),
  ];
}

export async function writeCpuProfile(path: string, profile: CpuProfile): Promise<void> {
  await writeFile(path, JSON.stringify(profile));
}
