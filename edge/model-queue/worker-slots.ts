// The workers a model queue can hand batches to: WebSocket workers (their hello and credential kept in
// the socket's attachment, so they survive hibernation, and the frames read and sent on it) and HTTP
// long-poll requests waiting for a batch. Used by ModelQueue to pick a free slot and deliver a batch to it.
import {
  type CoordinatorFrame,
  type Pool,
  ProtocolError,
  parseJsonText,
  parseWith,
  WorkerFrame,
  type WorkerInfo,
  workerRoom,
} from "../../shared/index.ts";

/**
 * What the edge route vouched for when the connection was made: a browser donor token pins the worker to
 * the browser pool and names the donor, which quarantine is keyed by. Empty for a worker-token connection.
 */
export interface Credential {
  pool?: "browser";
  donor?: string;
  /** The client network the connection came from (edge/client-address.ts); what donor independence reads. */
  network?: string;
  /** Which credential opened it (a donor, a worker token's fingerprint): only it may act on its leases. */
  holder?: string;
}

/**
 * A worker as leases are counted and lost by: the credential it came with and the id it gave itself, so a
 * donor that names itself after a gpu worker neither makes that worker look busy nor loses its leases.
 */
export function workerKey(w: { worker_id: string; holder?: string | null | undefined }): string {
  return `${w.holder ?? ""}\u0000${w.worker_id}`;
}

/** A worker as the queue leases to it: its hello (or long-poll request) plus what its credential vouched for. */
export type LeaseHolder = WorkerInfo & {
  donor?: string | undefined;
  network?: string | undefined;
  holder?: string | undefined;
};

/** What a socket's attachment holds: the worker's hello, whether it asked to drain, and its credential. */
export type SocketWorkerInfo = LeaseHolder & { draining?: boolean };

interface SocketAttachment {
  worker: SocketWorkerInfo | null;
  credential: Credential;
}

type Poller = { kind: "poll"; info: LeaseHolder; resolve: (batchJson: string | null) => void };

export type Slot = { kind: "socket"; ws: WebSocket; info: LeaseHolder } | Poller;

/** A slot with room for a batch, and the most items that batch may hold for its worker (workerRoom). */
export interface FreeSlot {
  slot: Slot;
  room: number;
}

/** HTTP workers count as connected for this long after their last lease call. */
const HTTP_WORKER_SEEN_MS = 60_000;
/**
 * ...but count as ready to take work (so that, say, calls pinned to the browser pool wait for them) only
 * while a poll is open or for this long after their last one: one poll a minute must not hold work back.
 */
const HTTP_WORKER_READY_MS = 5_000;
/** HTTP workers remembered at most (keyed by credential and id, both the client's to vary); oldest go first. */
const MAX_HTTP_WORKERS = 10_000;

/**
 * Each socket's attachment as last read or written: every frame and every hand-out pass reads it, and
 * deserializeAttachment copies it each time. Empty after hibernation, when the attachment is read once more.
 */
const attachments = new WeakMap<WebSocket, SocketAttachment>();

function attachment(ws: WebSocket): SocketAttachment {
  const known = attachments.get(ws);
  if (known) return known;
  const raw = ws.deserializeAttachment() as SocketAttachment | SocketWorkerInfo | null;
  // A socket hibernated by an earlier version holds the hello itself.
  const read =
    raw === null ? { worker: null, credential: {} } : "worker_id" in raw ? { worker: raw, credential: {} } : raw;
  attachments.set(ws, read);
  return read;
}

function attach(ws: WebSocket, value: SocketAttachment): void {
  ws.serializeAttachment(value);
  attachments.set(ws, value);
}

/** The worker on this socket; null before its hello, or once it is gone. */
export function socketWorker(ws: WebSocket): SocketWorkerInfo | null {
  return attachment(ws).worker;
}

/** What the route vouched for on this socket. */
export function socketCredential(ws: WebSocket): Credential {
  return attachment(ws).credential;
}

/** Records the credential a socket was opened with, before its hello. */
export function setSocketCredential(ws: WebSocket, credential: Credential): void {
  attach(ws, { worker: null, credential });
}

/** Records the worker on this socket; null forgets it, so it is handed no more batches. */
export function setSocketWorker(ws: WebSocket, info: SocketWorkerInfo | null): void {
  attach(ws, { ...attachment(ws), worker: info });
}

/** Reads one frame from a worker's socket: the typed frame, or the protocol error to answer it with. */
export function readFrame(message: string | ArrayBuffer): WorkerFrame | ProtocolError {
  const text = typeof message === "string" ? message : new TextDecoder().decode(message);
  const raw = parseJsonText(text, "frame");
  return raw instanceof ProtocolError ? raw : parseWith(WorkerFrame, raw, "worker frame");
}

/** A frame for a worker: the protocol's, or an error about one lease, which names it. */
export type OutgoingFrame = CoordinatorFrame;

export function sendFrame(ws: WebSocket, frame: OutgoingFrame): void {
  ws.send(JSON.stringify(frame));
}

export class WorkerSlots {
  /** HTTP long-poll workers waiting for a batch. In memory: they are live requests. */
  private pollers: Poller[] = [];
  private readonly httpWorkersSeen = new Map<string, { info: LeaseHolder; at: number }>();

  constructor(private readonly ctx: DurableObjectState) {}

  /**
   * Waits up to waitMs for a batch for an HTTP worker. `joined` runs once the worker is in line, so
   * a batch that is ready now goes out without waiting; then the wait starts if none was handed over.
   */
  poll(info: LeaseHolder, waitMs: number, now: number, joined: () => void): Promise<string | null> {
    const key = workerKey(info);
    this.httpWorkersSeen.delete(key);
    this.httpWorkersSeen.set(key, { info, at: now });
    if (this.httpWorkersSeen.size > MAX_HTTP_WORKERS) {
      this.httpWorkersSeen.delete(this.httpWorkersSeen.keys().next().value as string);
    }
    return new Promise<string | null>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const poller: Poller = {
        kind: "poll",
        info,
        resolve: (batch) => {
          if (timer !== undefined) clearTimeout(timer);
          this.pollers = this.pollers.filter((p) => p !== poller);
          resolve(batch);
        },
      };
      this.pollers.push(poller);
      joined();
      if (this.pollers.includes(poller)) timer = setTimeout(() => poller.resolve(null), waitMs);
    });
  }

  /** Ends this worker's waiting polls with no batch (it took one from another shard of the model). */
  endPolls(worker: { worker_id: string; holder?: string | undefined }): void {
    const key = workerKey(worker);
    for (const poller of this.pollers.filter((p) => workerKey(p.info) === key)) poller.resolve(null);
  }

  /** Connected workers by pool: sockets that said hello, and HTTP workers seen lately. */
  countByPool(now: number): Record<Pool, number> {
    const workers: Record<Pool, number> = { browser: 0, gpu: 0 };
    for (const ws of this.ctx.getWebSockets()) {
      const info = socketWorker(ws);
      if (info) workers[info.pool]++;
    }
    for (const seen of this.recentHttpWorkers(now)) workers[seen.pool]++;
    return workers;
  }

  /**
   * The workers of `pool` that could take a batch now (or soon): sockets that said hello and are not
   * draining, and HTTP workers polling now or within HTTP_WORKER_READY_MS; only those `mayLease` allows.
   */
  ready(pool: Pool, now: number, mayLease: (info: LeaseHolder) => boolean): LeaseHolder[] {
    const ready: LeaseHolder[] = [];
    for (const ws of this.ctx.getWebSockets()) {
      const info = socketWorker(ws);
      if (info && info.pool === pool && !info.draining && mayLease(info)) ready.push(info);
    }
    const polling = new Set(this.pollers.map((p) => workerKey(p.info)));
    for (const [key, seen] of this.httpWorkersSeen) {
      const live = polling.has(key) || now - seen.at <= HTTP_WORKER_READY_MS;
      if (live && seen.info.pool === pool && mayLease(seen.info)) ready.push(seen.info);
    }
    return ready;
  }

  /** When the next HTTP worker that is ready only by its last poll stops counting as ready; null if none. */
  httpReadyEndsAt(now: number): number | null {
    const polling = new Set(this.pollers.map((p) => workerKey(p.info)));
    let next: number | null = null;
    for (const [key, seen] of this.httpWorkersSeen) {
      const ends = seen.at + HTTP_WORKER_READY_MS;
      if (!polling.has(key) && ends > now && (next === null || ends < next)) next = ends;
    }
    return next;
  }

  /** Every connected worker (sockets that said hello, HTTP workers seen lately), for the operators' list. */
  list(now: number): (SocketWorkerInfo & { transport: "socket" | "http" })[] {
    const out: (SocketWorkerInfo & { transport: "socket" | "http" })[] = [];
    for (const ws of this.ctx.getWebSockets()) {
      const info = socketWorker(ws);
      if (info) out.push({ ...info, transport: "socket" });
    }
    for (const info of this.recentHttpWorkers(now)) out.push({ ...info, transport: "http" });
    return out;
  }

  private recentHttpWorkers(now: number): LeaseHolder[] {
    const recent: LeaseHolder[] = [];
    for (const [id, seen] of this.httpWorkersSeen) {
      if (now - seen.at > HTTP_WORKER_SEEN_MS) this.httpWorkersSeen.delete(id);
      else recent.push(seen.info);
    }
    return recent;
  }

  /**
   * Forgets the worker on a socket that closed or failed; answers its id if its leases are now lost,
   * null if the socket had no worker or the same worker is still connected on another socket.
   */
  forget(ws: WebSocket): LeaseHolder | null {
    const info = socketWorker(ws);
    // Forget the worker on this socket first, so the batches put back after are not handed to it again
    // (and a close after an error does not count twice).
    setSocketWorker(ws, null);
    if (!info) return null;
    // The same worker (id and credential) may have reconnected on a new socket: its leases count as lost
    // only if no other socket of it is open.
    const key = workerKey(info);
    const elsewhere = this.ctx.getWebSockets().some((other) => {
      const o = other === ws ? null : socketWorker(other);
      return o !== null && workerKey(o) === key;
    });
    return elsewhere ? null : info;
  }

  /**
   * The workers with room for a batch (workerRoom) that `mayLease` allows, fewest batches in hand first;
   * sockets, then long-poll requests (one batch a poll, so only their items in flight limit them). `held`:
   * each worker's active leases and the items they hold.
   */
  free(
    held: { byWorker: ReadonlyMap<string, number>; itemsByWorker: ReadonlyMap<string, number> },
    mayLease: (info: LeaseHolder) => boolean,
  ): FreeSlot[] {
    const items = (info: LeaseHolder) => held.itemsByWorker.get(workerKey(info)) ?? 0;
    const sockets: (FreeSlot & { n: number })[] = [];
    for (const ws of this.ctx.getWebSockets()) {
      const info = socketWorker(ws);
      if (!info || info.draining || ws.readyState !== WebSocket.READY_STATE_OPEN) continue;
      const n = held.byWorker.get(workerKey(info)) ?? 0;
      const room = workerRoom(info, n, items(info));
      if (room > 0 && mayLease(info)) sockets.push({ slot: { kind: "socket", ws, info }, room, n });
    }
    sockets.sort((a, b) => a.n - b.n);
    const pollers = this.pollers
      .map((slot) => ({ slot, room: workerRoom(slot.info, 0, items(slot.info)) }))
      .filter((p) => p.room > 0 && mayLease(p.slot.info));
    return [...sockets.map(({ slot, room }) => ({ slot, room })), ...pollers];
  }

  /** Open sockets whose credential matches, counted for the per-donor and per-network socket caps. */
  countSockets(matches: (credential: Credential) => boolean): number {
    let n = 0;
    for (const ws of this.ctx.getWebSockets()) if (matches(socketCredential(ws))) n++;
    return n;
  }

  /** The open sockets of a worker, or of any worker of a donor or of a client network. */
  socketsOf(workerId: string, donor: string | null, network: string | null = null): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => {
      const info = socketWorker(ws);
      return (
        info !== null &&
        (info.worker_id === workerId ||
          (donor !== null && info.donor === donor) ||
          (network !== null && info.network === network))
      );
    });
  }

  /** Hands a batch to its slot; false when a socket could not take it (it then gets no more batches). */
  deliver(slot: Slot, batchJson: string): boolean {
    if (slot.kind === "poll") {
      slot.resolve(batchJson);
      return true;
    }
    try {
      slot.ws.send(`{"type":"batch",${batchJson.slice(1)}`);
      return true;
    } catch {
      setSocketWorker(slot.ws, null);
      return false;
    }
  }
}
