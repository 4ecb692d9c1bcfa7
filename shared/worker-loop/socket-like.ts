// The little a worker's connection needs of a WebSocket and of timers, the same in a browser's Web Worker and
// in Node (the `ws` package): the socket's shape, how one is opened, and timers that never keep Node alive.
// Used by model-connection.ts.

/** What the connection needs of a WebSocket: the standard browser API, which the `ws` package also offers. */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number }) => void): void;
  addEventListener(type: "error", listener: (event: { message?: string }) => void): void;
}

/** WebSocket readyState values (the same in browsers, workerd and `ws`). */
export const OPEN = 1;
export const CLOSED = 3;

/** Opens a socket to `url` with the worker's credential: a header where the platform allows one, else ?token=. */
export type OpenSocket = (url: string, token: string | undefined) => SocketLike;

/** A timer that does not keep a Node process alive; browsers have no unref and need none. */
export function quietTimeout(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
  const timer = setTimeout(fn, ms);
  (timer as { unref?: () => void }).unref?.();
  return timer;
}
export const sleep = (ms: number) => new Promise<void>((r) => quietTimeout(r, ms));
