// The dashboard's "Workers and donors now" table: every connected worker of every model, from the
// operators' GET /v1/models/{m}/workers, with its pool, device, the models it serves, the leases it
// holds, its standing and any quarantine. dashboard.ts calls showWorkers on each refresh.

/** The parts of one entry of GET /v1/models/{m}/workers the table shows. */
interface RosterEntry {
  worker_id: string;
  pool: string;
  device: string;
  gpu?: Record<string, string | undefined>;
  donor?: string;
  leases_held: number;
  standing?: { agreed: number; in_good_standing: boolean };
  quarantine: { until: number; reason: string } | null;
}

interface Row {
  worker: string;
  pool: string;
  device: string;
  models: string[];
  leases: number;
  trust: string;
}

function trustOf(entry: RosterEntry): string {
  if (entry.quarantine) return `quarantined until ${new Date(entry.quarantine.until).toLocaleTimeString()}`;
  if (!entry.standing) return "trusted";
  return entry.standing.in_good_standing ? `good standing (${entry.standing.agreed} agreed)` : "on probation";
}

/** One row per worker (a worker holds a socket per model it serves). */
export function rowsOf(rosters: readonly { model: string; workers: readonly RosterEntry[] }[]): Row[] {
  const rows = new Map<string, Row>();
  for (const { model, workers } of rosters) {
    for (const w of workers) {
      const key = `${w.pool}\n${w.worker_id}`;
      const row = rows.get(key) ?? {
        worker: w.donor ? `${w.worker_id} (donor ${w.donor})` : w.worker_id,
        pool: w.pool,
        device: w.gpu?.description ? `${w.device}: ${w.gpu.description}` : w.device,
        models: [],
        leases: 0,
        trust: trustOf(w),
      };
      row.models.push(model);
      row.leases += w.leases_held;
      if (w.quarantine) row.trust = trustOf(w);
      rows.set(key, row);
    }
  }
  return [...rows.values()].sort((a, b) => a.pool.localeCompare(b.pool) || a.worker.localeCompare(b.worker));
}

/** Reads each model's roster and fills #workers; a refusal (no operator key) is said in #workers-note. */
export async function showWorkers(models: readonly string[], read: (path: string) => Promise<Response>) {
  const note = document.getElementById("workers-note") as HTMLElement;
  try {
    const rosters = await Promise.all(
      models.map(async (m) => (await read(`/v1/models/${encodeURIComponent(m)}/workers`)).json()),
    );
    const rows = rowsOf(rosters).map((r) => {
      const tr = document.createElement("tr");
      for (const cell of [r.worker, r.pool, r.device, r.models.join(", "), r.leases, r.trust]) {
        tr.insertCell().textContent = String(cell);
      }
      return tr;
    });
    (document.getElementById("workers") as HTMLElement).replaceChildren(...rows);
    note.textContent = rows.length === 0 ? "none connected" : "";
  } catch (error) {
    note.textContent = `not shown: ${(error as Error).message}`;
  }
}
