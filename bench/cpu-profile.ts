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
  await session.call("Profiler.setSamplingInterval", { interval: 200 });
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

/** The functions with the most self time, as table lines: share of samples, ms, function and place. */
export function topSelfTime(profile: CpuProfile, count = 25): string[] {
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const totalUs = profile.endTime - profile.startTime;
  const deltas = profile.timeDeltas ?? [];
  const selfUs = new Map<string, number>();
  (profile.samples ?? []).forEach((id, i) => {
    const node = byNode.get(id);
    if (!node) return;
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || "(anonymous)"} ${url.split("/").slice(-2).join("/")}:${lineNumber + 1}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + (deltas[i + 1] ?? 0));
  });
  return [...selfUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(
      ([key, us]) =>
        `${((us / totalUs) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${key}`,
    );
}

export async function writeCpuProfile(path: string, profile: CpuProfile): Promise<void> {
  await writeFile(path, JSON.stringify(profile));
}
