// SQLite schema of a model queue object. Append a migration to change it; never edit a shipped one.

export const MODEL_QUEUE_MIGRATIONS = [
  `
  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    session TEXT,
    n_items INTEGER NOT NULL,
    n_open INTEGER NOT NULL,
    status TEXT NOT NULL,
    last_leased_at INTEGER,
    compute_ms REAL NOT NULL DEFAULT 0,
    pool TEXT,
    finished_at INTEGER,
    error_code TEXT,
    error_message TEXT
  );
  CREATE INDEX jobs_open ON jobs (status, deadline);
  CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

  CREATE TABLE items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_id TEXT,
    lease_pos INTEGER,
    leased_at INTEGER,
    input TEXT NOT NULL,
    output TEXT,
    error_code TEXT,
    error_message TEXT
  );
  CREATE INDEX items_queue ON items (state, priority DESC, seq);
  CREATE INDEX items_job ON items (job_id, idx);
  CREATE INDEX items_lease ON items (lease_id, lease_pos) WHERE lease_id IS NOT NULL;

  CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    worker_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    state TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    ended_at INTEGER
  );
  CREATE INDEX leases_active ON leases (state, deadline);

  CREATE TABLE counters (
    name TEXT NOT NULL,
    pool TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (name, pool)
  );
  CREATE TABLE histograms (
    name TEXT NOT NULL,
    pool TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (name, pool, bucket)
  );
  CREATE TABLE histogram_totals (
    name TEXT NOT NULL,
    pool TEXT NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (name, pool)
  );
  `,
  // Trust in browser workers (verification.ts, trust-store.ts): outputs held as candidates until a second
  // run agrees, canary items (state 'canary', their expected output in `output`), known answers to draw
  // canaries from, quarantines, and each worker's agreeing verifications.
  `
  ALTER TABLE items ADD COLUMN n_candidates INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE leases ADD COLUMN donor TEXT;
  CREATE INDEX items_held ON items (state) WHERE n_candidates > 0;

  CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    item_seq INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    donor TEXT,
    lease_id TEXT NOT NULL,
    output TEXT NOT NULL
  );
  CREATE INDEX candidates_item ON candidates (item_seq);
  CREATE INDEX candidates_worker ON candidates (worker_id);
  CREATE INDEX candidates_donor ON candidates (donor) WHERE donor IS NOT NULL;
  CREATE INDEX candidates_lease ON candidates (lease_id);

  CREATE TABLE known_answers (
    id INTEGER PRIMARY KEY,
    model_sha TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    added_at INTEGER NOT NULL
  );

  CREATE TABLE quarantine (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    until INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, id)
  );

  CREATE TABLE worker_trust (
    worker_id TEXT NOT NULL,
    donor TEXT NOT NULL,
    agreed INTEGER NOT NULL,
    PRIMARY KEY (worker_id, donor)
  );
  `,
  // Routing (pool-router.ts): the pool a caller pinned an item to; NULL is routed, browser first.
  `ALTER TABLE items ADD COLUMN pool TEXT;`,
  // Trace context: the call's W3C traceparent, and the span each input's worker answered with.
  `ALTER TABLE jobs ADD COLUMN traceparent TEXT;
   ALTER TABLE items ADD COLUMN worker_traceparent TEXT;`,
  // Sessions (edge/sessions): the session object a job runs in, its state for the workers, and whether
  // the job's inputs and outputs still wait to be appended to the session's history.
  `ALTER TABLE jobs ADD COLUMN session_ref TEXT;
   ALTER TABLE jobs ADD COLUMN session_state TEXT;
   ALTER TABLE jobs ADD COLUMN session_pending INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX jobs_session_pending ON jobs (session_pending) WHERE session_pending = 1;`,
  // Routing counts what the GPU pool may take without reading the whole queue (pool-router.ts).
  `CREATE INDEX items_routed ON items (state, pool, enqueued_at);
   CREATE INDEX items_tie_breaks ON items (state, pool) WHERE n_candidates >= 2;`,
  // The queue's indexes hold queued items only, so a lease taken or settled rewrites fewer index pages;
  // canaries (verification.ts) get their own small index.
  `DROP INDEX items_queue;
   DROP INDEX items_routed;
   CREATE INDEX items_queued ON items (priority DESC, seq) WHERE state = 'queued';
   CREATE INDEX items_queued_routing ON items (pool, enqueued_at) WHERE state = 'queued';
   CREATE INDEX items_canaries ON items (lease_id) WHERE state = 'canary';`,
  // Likewise open jobs and active leases by deadline only, so a job or lease that ends leaves its index
  // rather than moving within it; ended leases get an index of their own for the alarm's clean-up.
  `DROP INDEX jobs_open;
   DROP INDEX leases_active;
   CREATE INDEX jobs_open_deadline ON jobs (deadline) WHERE status IN ('queued', 'running');
   CREATE INDEX leases_active_deadline ON leases (deadline) WHERE state = 'active';
   CREATE INDEX leases_ended ON leases (ended_at) WHERE state != 'active';`,
  // Items waiting out a retry backoff (or put back): the alarm finds the next of them without a scan.
  `CREATE INDEX items_backoff ON items (available_at) WHERE state = 'queued' AND available_at > enqueued_at;`,
  // Donors (issue 12): where a lease's holder connected from and which credential may act on the lease, when
  // an untrusted lease is hedged, the donor faults an item has absorbed, the network each candidate came from,
  // trust rows that expire with their donor, and each worker's circuit breaker.
  `ALTER TABLE leases ADD COLUMN network TEXT;
   ALTER TABLE leases ADD COLUMN holder TEXT;
   ALTER TABLE leases ADD COLUMN hedge_at INTEGER;
   CREATE INDEX leases_hedge ON leases (hedge_at) WHERE state = 'active' AND hedge_at IS NOT NULL;
   CREATE INDEX leases_active_donor ON leases (donor) WHERE state = 'active' AND donor IS NOT NULL;
   CREATE INDEX leases_active_network ON leases (network) WHERE state = 'active' AND network IS NOT NULL;
   ALTER TABLE items ADD COLUMN donor_faults INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE candidates ADD COLUMN network TEXT;
   CREATE INDEX candidates_network ON candidates (network) WHERE network IS NOT NULL;
   ALTER TABLE worker_trust ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX worker_trust_expiry ON worker_trust (expires_at);
   CREATE TABLE breakers (
     worker TEXT PRIMARY KEY,
     pool TEXT NOT NULL,
     state TEXT NOT NULL,
     failures INTEGER NOT NULL,
     until INTEGER,
     probing INTEGER NOT NULL DEFAULT 0,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX breakers_updated ON breakers (updated_at);`,
  // Admin and safety operations (issue 17): a hash of the caller key that made each job (only it reads or
  // cancels the job), the hash of the request an Idempotency-Key was first used with, and dead letters found
  // without a scan.
  `ALTER TABLE jobs ADD COLUMN owner TEXT;
   ALTER TABLE jobs ADD COLUMN request_hash TEXT;
   CREATE INDEX items_dead ON items (job_id) WHERE state = 'failed' AND error_code = 'max_attempts_exceeded';`,
  // Text generation (issue 14, token-stream.ts): the tokens of an item accepted so far (a JSON array) and their
  // text, kept across deliveries so a redelivered item resumes after them; when its first token came.
  `ALTER TABLE items ADD COLUMN gen_tokens TEXT;
   ALTER TABLE items ADD COLUMN gen_text TEXT NOT NULL DEFAULT '';
   ALTER TABLE items ADD COLUMN gen_count INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE items ADD COLUMN first_token_at INTEGER;
   CREATE INDEX items_generating ON items (job_id) WHERE first_token_at IS NOT NULL;`,
  // Items of a lease done with before it ends (settled ahead by a `results` frame, lease-settlement.ts
  // settleEarly; cancelled or expired with their job): it still holds n_items - n_done, the room the worker's
  // max_items_in_flight counts. item_results: the batch was given with Batch.item_results (a trusted worker).
  `ALTER TABLE leases ADD COLUMN n_done INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE leases ADD COLUMN item_results INTEGER NOT NULL DEFAULT 0;`,
  // Log probabilities of a generating item's accepted tokens: a JSON array, one entry a token of gen_tokens, written
  // in ASCII (other characters escaped) so its character offsets are its JavaScript ones; '[]' from submit when
  // the item's params.logprobs asks, NULL when it does not.
  `ALTER TABLE items ADD COLUMN gen_logprobs TEXT;`,
] as const;
