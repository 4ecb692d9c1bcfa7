// The workers a model queue can hand batches to: WebSocket workers (their hello kept in the socket's
// attachment, so it survives hibernation, and the frames read and sent on it) and HTTP long-poll
// requests waiting for a batch. Used by ModelQueue to pick the free slot and deliver a batch to it.
import {
  type CoordinatorFrame,
  type Pool,
  ProtocolError,
  parseJsonText,
  parseWith,
  WorkerFrame,
  type WorkerInfo,
} from "../../shared/index.ts";

/** What a socket's attachment holds: the worker's hello, and whether it asked to drain. */
export type SocketWorkerInfo = WorkerInfo & { draining?: boolean };

type Poller = { kind: "poll"; info: WorkerInfo; resolve: (batchJson: string | null) => void };

export type Slot = { kind: "socket"; ws: WebSocket; info: WorkerInfo } | Poller;

/** HTTP workers count as connected for this long after their last lease call. */
const HTTP_WORKER_SEEN_MS = 60_000;

/** The worker on this socket; null before its hello, or once it is gone. */
export function socketWorker(ws: WebSocket): SocketWorkerInfo | null {
  return ws.deserializeAttachment() as SocketWorkerInfo | null;
}

/** Records the worker on this socket; null forgets it, so it is handed no more batches. */
export function setSocketWorker(ws: WebSocket, info: SocketWorkerInfo | null): void {
  ws.serializeAttachment(info);
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
  private readonly httpWorkersSeen = new Map<string, { pool: Pool; at: number }>();

  constructor(private readonly ctx: DurableObjectState) {}

  /**
   * Waits up to waitMs for a batch for an HTTP worker. `joined` runs once the worker is in line, so
   * a batch that is ready now goes out without waiting; then the wait starts if none was handed over.
   */
  poll(info: WorkerInfo, waitMs: number, now: number, joined: () => void): Promise<string | null> {
    this.httpWorkersSeen.set(info.worker_id, { pool: info.pool, at: now });
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

  /** Connected workers by pool: sockets that said hello, and HTTP workers seen lately. */
  countByPool(now: number): Record<Pool, number> {
    const workers: Record<Pool, number> = { browser: 0, gpu: 0 };
    for (const ws of this.ctx.getWebSockets()) {
      const info = socketWorker(ws);
      if (info) workers[info.pool]++;
    }
    for (const [id, seen] of this.httpWorkersSeen) {
      if (now - seen.at > HTTP_WORKER_SEEN_MS) this.httpWorkersSeen.delete(id);
      else workers[seen.pool]++;
    }
    return workers;
  }

  /**
   * Forgets the worker on a socket that closed or failed; answers its id if its leases are now lost,
   * null if the socket had no worker or the same worker is still connected on another socket.
   */
  forget(ws: WebSocket): string | null {
    const info = socketWorker(ws);
    // Forget the worker on this socket first, so the batches put back after are not handed to it again
    // (and a close after an error does not count twice).
    setSocketWorker(ws, null);
    if (!info) return null;
    // The same worker id may have reconnected on a new socket: its leases count as lost only if no
    // other socket of it is open.
    const elsewhere = this.ctx
      .getWebSockets()
      .some((other) => other !== ws && socketWorker(other)?.worker_id === info.worker_id);
    return elsewhere ? null : info.worker_id;
  }

  /**
   * The free worker with the fewest batches in hand; sockets first, then long-poll requests.
   * `held` is each worker's count of active leases.
   */
  free(held: ReadonlyMap<string, number>): Slot | undefined {
    let best: Slot | undefined;
    let bestHeld = Number.POSITIVE_INFINITY;
    for (const ws of this.ctx.getWebSockets()) {
      const info = socketWorker(ws);
      if (!info || info.draining || ws.readyState !== WebSocket.READY_STATE_OPEN) continue;
      const n = held.get(info.worker_id) ?? 0;
      if (n < info.max_concurrent_batches && n < bestHeld) {
        best = { kind: "socket", ws, info };
        bestHeld = n;
      }
    }
    return best ?? this.pollers[0];
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
