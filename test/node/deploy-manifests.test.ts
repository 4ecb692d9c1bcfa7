// The GPU worker's deployment files, checked against the code they deploy: worker-gpu/Dockerfile,
// worker-gpu/k8s/ (kustomize, KEDA) and the Kubernetes section of docs/deployment.md. Nothing here builds an image or
// talks to a cluster; every number, path and port is read from where the worker or coordinator defines it.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import type { Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { experimental_readRawConfig } from "wrangler";
import { parseAllDocuments } from "yaml";
import { type PoolScaling, SCALING_DEFAULTS, ScalingConfig } from "../../shared/config/scaling-config.ts";
import { Pool } from "../../shared/index.ts";
import { startHealthServer } from "../../worker-gpu/health-server.ts";
import { parseOptions, type WorkerOptions } from "../../worker-gpu/options.ts";
import { WorkerMetrics } from "../../worker-gpu/worker-metrics.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const K8S = "worker-gpu/k8s";
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
/** After SIGTERM's drain the worker still releases what is left, closes its sockets and exits. */
const EXIT_MARGIN_MS = 5_000;

// ---- the manifests -------------------------------------------------------------------------------------

type Obj = Record<string, any>;

function yamlDocs(path: string): Obj[] {
  return parseAllDocuments(read(path)).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors.map((e) => e.message).join("; ")}`);
    return doc.toJS() as Obj;
  });
}

const kustomization = yamlDocs(`${K8S}/kustomization.yaml`)[0] as Obj;
const resources = (kustomization.resources as string[]).flatMap((file) => yamlDocs(`${K8S}/${file}`));
const exampleSecrets = yamlDocs(`${K8S}/secret.example.yaml`);

function only(kind: string): Obj {
  const found = resources.filter((r) => r.kind === kind);
  if (found.length !== 1) throw new Error(`kustomization.yaml's resources hold ${found.length} ${kind}, not one`);
  return found[0] as Obj;
}

const deployment = only("Deployment");
const scaledObject = only("ScaledObject");
const triggerAuth = only("TriggerAuthentication");
const podSpec = deployment.spec.template.spec as Obj;
const container = podSpec.containers[0] as Obj;
const trigger = scaledObject.spec.triggers[0] as Obj;

/** What a generated ConfigMap holds: configMapGenerator literals, `KEY=value`. */
function generatedConfigMap(name: string): Record<string, string> {
  const generator = (kustomization.configMapGenerator as Obj[] | undefined)?.find((g) => g.name === name);
  if (!generator) throw new Error(`no configMapGenerator named ${name} in kustomization.yaml`);
  return Object.fromEntries(
    (generator.literals as string[]).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

interface SecretRef {
  name: string;
  key: string;
}

/** The container's environment as the pod sees it; Secret-backed values become `secret:<name>/<key>`. */
function containerEnvironment(c: Obj): { env: Record<string, string>; secrets: Map<string, SecretRef> } {
  const env: Record<string, string> = {};
  const secrets = new Map<string, SecretRef>();
  for (const from of (c.envFrom as Obj[] | undefined) ?? []) {
    if (from.configMapRef) Object.assign(env, generatedConfigMap(from.configMapRef.name));
    else throw new Error(`unexpected envFrom ${JSON.stringify(from)}`);
  }
  for (const e of (c.env as Obj[] | undefined) ?? []) {
    if (typeof e.value === "string") env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef as SecretRef;
      secrets.set(e.name, ref);
      env[e.name] = `secret:${ref.name}/${ref.key}`;
    } else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef as SecretRef;
      env[e.name] = generatedConfigMap(ref.name)[ref.key] as string;
    } else throw new Error(`env ${e.name} has neither a string value nor a ref`);
  }
  return { env, secrets };
}

const { env: podEnv, secrets: podSecrets } = containerEnvironment(container);
/** The options the worker in the pod parses: the Deployment's args and environment, through the real parser. */
const podOptions = parseOptions((container.args as string[] | undefined) ?? [], podEnv) as WorkerOptions;

function containerPort(port: number | string): number {
  if (typeof port === "number") return port;
  const named = (container.ports as Obj[]).find((p) => p.name === port);
  if (!named) throw new Error(`no container port named ${port}`);
  return named.containerPort as number;
}

function exampleSecretHas(ref: SecretRef): boolean {
  const secret = exampleSecrets.find((s) => s.kind === "Secret" && s.metadata.name === ref.name);
  return secret !== undefined && ref.key in { ...secret.stringData, ...secret.data };
}

// ---- the coordinator's scaling settings ---------------------------------------------------------------

/** The gpu pool settings the coordinator runs with: wrangler.toml's SCALING (top level and each [env]) or the defaults. */
function coordinatorGpuScaling(): { where: string; gpu: PoolScaling; fromDefaults: boolean }[] {
  const { rawConfig } = experimental_readRawConfig({ config: join(ROOT, "wrangler.toml") });
  const places: [string, unknown][] = [["wrangler.toml [vars]", rawConfig.vars?.SCALING]];
  for (const [name, environment] of Object.entries((rawConfig.env ?? {}) as Record<string, Obj>)) {
    places.push([`wrangler.toml [env.${name}.vars]`, environment.vars?.SCALING]);
  }
  return places.map(([where, raw]) => ({
    where,
    // The edge reads SCALING as JSON text (edge/config.ts); wrangler also allows a table.
    gpu: ScalingConfig.parse(typeof raw === "string" ? JSON.parse(raw) : (raw ?? {})).gpu,
    fromDefaults: raw === undefined,
  }));
}

/** The ScaledObject's numbers in the coordinator's terms. */
function scaledObjectScaling(): PoolScaling {
  const window = scaledObject.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds;
  return {
    target_per_replica: Number(trigger.metadata.targetValue),
    activation_threshold: Number(trigger.metadata.activationTargetValue),
    min_replicas: scaledObject.spec.minReplicaCount,
    max_replicas: scaledObject.spec.maxReplicaCount,
    scale_down_window_ms: window * 1000,
  };
}

// ---- the Dockerfile -----------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
}

/** Instructions per build stage, comments dropped and `\` continuations joined. */
function dockerStages(text: string): Instruction[][] {
  const stages: Instruction[][] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue; // a comment inside a continued instruction
    pending += `${line.replace(/\\$/, "").trim()} `;
    if (line.endsWith("\\")) continue;
    const [op, ...rest] = pending.trim().split(/\s+/);
    pending = "";
    const instruction = { op: (op as string).toUpperCase(), args: rest.join(" ") };
    if (instruction.op === "FROM") stages.push([]);
    stages.at(-1)?.push(instruction);
  }
  return stages;
}

const dockerfile = dockerStages(read("worker-gpu/Dockerfile"));
const runtimeStage = dockerfile.at(-1) as Instruction[];
const ops = (stage: Instruction[], op: string) => stage.filter((i) => i.op === op);
const execForm = (args: string) => JSON.parse(args) as string[];

/** A stage's `ENV a=b c=d` lines as a record. */
function envOf(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of ops(stage, "ENV")) {
    if (!args.includes("=")) throw new Error(`write ENV as name=value: ENV ${args}`);
    for (const [, name, value] of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[name as string] = value as string;
  }
  return env;
}

/** The runtime stage's WORKDIR (absolute). */
const workdir = ops(runtimeStage, "WORKDIR").at(-1)?.args ?? "/";

/** Files the runtime stage copies from the build context: context path -> absolute path in the image. */
function copiedFromContext(stage: Instruction[]): { from: string; to: string }[] {
  return ops(stage, "COPY")
    .filter((i) => !/--from=/.test(i.args))
    .flatMap(({ args }) => {
      const parts = args.split(/\s+/).filter((p) => !p.startsWith("--"));
      const dest = posix.resolve(workdir, parts.at(-1) as string);
      const sources = parts.slice(0, -1).map((s) => posix.normalize(s).replace(/\/$/, ""));
      const intoDir = sources.length > 1 || (parts.at(-1) as string).endsWith("/");
      return sources.map((from) => ({ from, to: intoDir ? posix.join(dest, posix.basename(from)) : dest }));
    });
}

/** Where a repository file lands in the image, or undefined when no COPY brings it. */
function imagePathOf(file: string): string | undefined {
  for (const { from, to } of copiedFromContext(runtimeStage)) {
    if (file === from) return to;
    if (file.startsWith(`${from}/`)) return posix.join(to, file.slice(from.length + 1));
  }
  return undefined;
}

/** Whether .dockerignore keeps a file out of the build context (last matching line wins, as in Docker). */
function dockerIgnored(file: string): boolean {
  let ignored = false;
  for (const raw of read(".dockerignore").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const negated = line.startsWith("!");
    const pattern = line.replace(/^!/, "").replace(/\/$/, "");
    // This file uses only `*` and plain paths; anything else needs a real matcher here first.
    if (pattern !== "*" && /[*?[\]]/.test(pattern)) throw new Error(`unsupported .dockerignore pattern ${line}`);
    if (pattern === "*" || file === pattern || file.startsWith(`${pattern}/`)) ignored = !negated;
  }
  return ignored;
}

// ---- the worker's files -------------------------------------------------------------------------------

/** The worker command's path from the repository root, as scripts/lib/worker-process.ts starts it. */
function testedWorkerBin(): string {
  const source = read("scripts/lib/worker-process.ts");
  const match = source.match(/const BIN = fileURLToPath\(new URL\("([^"]+)", import\.meta\.url\)\)/);
  if (!match) throw new Error("scripts/lib/worker-process.ts no longer names the worker bin as expected");
  return posix.normalize(posix.join("scripts/lib", match[1] as string));
}

/** Every repository file the worker loads, following relative imports (type-only ones are erased) from `entry`. */
function importGraph(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = read(file);
    const specifiers = [
      ...source.matchAll(/^\s*(?:import|export)\s+(?!type\s)[^;]*?\bfrom\s+["'](\.{1,2}\/[^"']+)["']/gm),
      ...source.matchAll(/^\s*import\s+["'](\.{1,2}\/[^"']+)["']/gm),
      ...source.matchAll(/\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g),
      // Worker threads: `new Worker(new URL("./thread.mjs", import.meta.url))` loads a file no import names.
      ...source.matchAll(/\bnew URL\(\s*["'](\.{1,2}\/[^"']+\.m?[jt]s)["']\s*,\s*import\.meta\.url\s*\)/g),
    ].map((m) => m[1] as string);
    for (const s of specifiers) visit(posix.join(posix.dirname(file), s));
  };
  visit(entry);
  return [...seen].sort();
}

/** The bundled model files the worker loads by default (--model-base is the repository's models/). */
function bundledModelFiles(): string[] {
  const registry = JSON.parse(read("models/registry.json")) as { models: Obj[] };
  return [
    "models/registry.json",
    ...registry.models
      .filter((m) => m.files)
      .flatMap((m) => {
        const folder = posix.join("models", m.files.base_url ?? m.name);
        return Object.values(m.files as Record<string, Obj>)
          .filter((f) => typeof f === "object" && typeof f.path === "string")
          .map((f) => posix.join(folder, f.path));
      }),
  ];
}

// ---- the worker's health server, for real -------------------------------------------------------------

let server: Server;
let healthBase: string;
let workerReady = false;

beforeAll(async () => {
  server = await startHealthServer(
    { metrics: new WorkerMetrics(), ready: () => ({ ready: workerReady, detail: {} }) },
    0,
    "127.0.0.1",
  );
  healthBase = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function statusOf(path: string, ready: boolean): Promise<number> {
  workerReady = ready;
  const res = await fetch(`${healthBase}${path}`);
  await res.body?.cancel();
  return res.status;
}

/** A liveness path answers 200 whether or not the worker is ready; a readiness path follows readiness. */
async function expectLiveness(path: string) {
  expect([await statusOf(path, false), await statusOf(path, true)], `${path} as a liveness check`).toEqual([200, 200]);
}
async function expectReadiness(path: string) {
  expect([await statusOf(path, false), await statusOf(path, true)], `${path} as a readiness check`).toEqual([503, 200]);
}

// ---- the checks ---------------------------------------------------------------------------------------

describe("worker-gpu/k8s (kustomize)", () => {
  it("parses every manifest, and applies every one but the secret example", () => {
    const files = readdirSync(join(ROOT, K8S)).filter((f) => /\.ya?ml$/.test(f));
    for (const f of files) expect(() => yamlDocs(`${K8S}/${f}`), f).not.toThrow();
    const listed = new Set<string>(["kustomization.yaml", "secret.example.yaml", ...kustomization.resources]);
    expect(
      files.filter((f) => !listed.has(f)),
      "manifests kustomization.yaml leaves out",
    ).toEqual([]);
    expect(kustomization.resources, "the secret example is never applied").not.toContain("secret.example.yaml");
  });

  it("gives the worker one GPU, requested and limited", () => {
    expect(String(container.resources.requests["nvidia.com/gpu"])).toBe("1");
    expect(String(container.resources.limits["nvidia.com/gpu"])).toBe("1");
  });

  it("runs the image's entrypoint, the worker command, unchanged", () => {
    expect(container.command).toBeUndefined();
    const images = (kustomization.images as Obj[] | undefined) ?? [];
    expect(images.map((i) => i.name)).toContain(container.image);
  });

  it("probes the paths and port the worker's health server serves", async () => {
    const { startupProbe, livenessProbe, readinessProbe } = container;
    for (const probe of [startupProbe, livenessProbe, readinessProbe]) {
      expect(containerPort(probe.httpGet.port)).toBe(podOptions.port);
    }
    // Probes come from the kubelet, off the pod: the server must listen on every address.
    expect(["0.0.0.0", "::"]).toContain(podOptions.host);
    await expectLiveness(startupProbe.httpGet.path);
    await expectLiveness(livenessProbe.httpGet.path);
    await expectReadiness(readinessProbe.httpGet.path);
  });

  it("gives the worker longer than its drain timeout to stop, and sets that timeout explicitly", () => {
    const explicit =
      "EDGESWARM_DRAIN_TIMEOUT_MS" in podEnv ||
      ((container.args as string[] | undefined) ?? []).some((a) => a.startsWith("--drain-timeout-ms"));
    expect(explicit, "drain timeout set in the Deployment, not left to the default").toBe(true);
    expect(podSpec.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(
      podOptions.drainTimeoutMs + EXIT_MARGIN_MS,
    );
  });

  it("takes the worker token from a Secret the example shows, and joins the gpu pool on cuda only", () => {
    const ref = podSecrets.get("EDGESWARM_WORKER_TOKEN");
    expect(ref, "EDGESWARM_WORKER_TOKEN from a secretKeyRef").toBeDefined();
    expect(podOptions.token).toBe(`secret:${ref?.name}/${ref?.key}`);
    for (const [name, r] of podSecrets) expect(exampleSecretHas(r), `${name}: ${r.name}/${r.key}`).toBe(true);
    expect(podOptions.pool).toBe("gpu");
    // Not auto: a pod without a working GPU must stop, not join the gpu pool on the CPU.
    expect(podOptions.device).toBe("cuda");
  });

  it("runs as the image's non-root user", () => {
    const pod = podSpec.securityContext as Obj;
    const own = container.securityContext as Obj;
    expect(own.runAsNonRoot ?? pod.runAsNonRoot).toBe(true);
    const uid = own.runAsUser ?? pod.runAsUser;
    expect(uid).toBeGreaterThan(0);
    expect(String(uid)).toBe(ops(runtimeStage, "USER").at(-1)?.args.split(":")[0]);
    expect(own.allowPrivilegeEscalation).toBe(false);
  });
});

describe("the KEDA ScaledObject", () => {
  it("scales the worker Deployment on the coordinator's /v1/scaling, gpu queue length", () => {
    expect(scaledObject.apiVersion).toBe("keda.sh/v1alpha1");
    expect(scaledObject.spec.scaleTargetRef.name).toBe(deployment.metadata.name);
    expect(scaledObject.spec.scaleTargetRef.kind ?? "Deployment").toBe("Deployment");
    expect(scaledObject.spec.triggers).toHaveLength(1);
    expect(trigger.type).toBe("metrics-api");
    // The same coordinator the workers connect to, and a route it serves.
    expect(trigger.metadata.url).toBe(`${podOptions.coordinator}/v1/scaling`);
    expect(read("edge/routes/ops.ts")).toContain(`.get("${new URL(trigger.metadata.url).pathname}"`);
    const [pools, pool, field] = String(trigger.metadata.valueLocation).split(".");
    expect([pools, field]).toEqual(["pools", "queue_length"]);
    expect(Pool).toContain(pool);
    expect(pool).toBe(podOptions.pool);
  });

  it("passes trigger metadata as strings, as KEDA's metadata map requires", () => {
    for (const [key, value] of Object.entries(trigger.metadata)) expect(typeof value, key).toBe("string");
  });

  it("uses the coordinator's numbers: wrangler.toml's SCALING, else SCALING_DEFAULTS.gpu", () => {
    const manifest = scaledObjectScaling();
    for (const { where, gpu, fromDefaults } of coordinatorGpuScaling()) {
      expect(manifest, where).toEqual(gpu);
      if (fromDefaults) expect(manifest, `${where} (unset: the defaults)`).toEqual(SCALING_DEFAULTS.gpu);
    }
  });

  it("falls back to at least the floor, never zero, when /v1/scaling fails", () => {
    const { failureThreshold, replicas } = scaledObject.spec.fallback;
    expect(Number.isInteger(failureThreshold) && failureThreshold >= 1).toBe(true);
    expect(replicas).toBeGreaterThanOrEqual(Math.max(1, scaledObject.spec.minReplicaCount));
    expect(replicas).toBeLessThanOrEqual(scaledObject.spec.maxReplicaCount);
  });

  it("authenticates with a bearer token from a Secret the example shows", () => {
    expect(trigger.metadata.authMode).toBe("bearer");
    expect(trigger.authenticationRef.name).toBe(triggerAuth.metadata.name);
    expect(trigger.authenticationRef.kind ?? "TriggerAuthentication").toBe("TriggerAuthentication");
    expect(triggerAuth.apiVersion).toBe("keda.sh/v1alpha1");
    const refs = triggerAuth.spec.secretTargetRef as Obj[];
    const token = refs.find((r) => r.parameter === "token");
    expect(token, "secretTargetRef for the metrics-api bearer parameter `token`").toBeDefined();
    for (const r of refs) expect(exampleSecretHas(r as SecretRef), `${r.name}/${r.key}`).toBe(true);
    // An operator key: with OPERATOR_KEYS set the coordinator refuses caller keys on /v1/scaling (403).
    const secret = exampleSecrets.find((s) => s.metadata.name === token?.name) as Obj;
    expect(secret.stringData[token?.key], "the example's KEDA token").toMatch(/OPERATOR_KEYS/);
    expect(read("edge/routes/ops.ts")).toContain('.get("/v1/scaling", requireKey("metrics")');
  });
});

describe("worker-gpu/Dockerfile", () => {
  it("runs on a pinned NVIDIA CUDA runtime with cuDNN, of the CUDA major onnxruntime-node installs for", () => {
    const base = ops(runtimeStage, "FROM")[0]?.args ?? "";
    const match = base.match(/^nvidia\/cuda:(\d+)\.\d+\.\d+-cudnn\d*-runtime-ubuntu[\d.]+$/);
    expect(match, `runtime base ${base}`).not.toBeNull();
    const variant = dockerfile.map(envOf).find((e) => e.ONNXRUNTIME_NODE_INSTALL)?.ONNXRUNTIME_NODE_INSTALL;
    expect(variant).toBe(`cuda${match?.[1]}`);
  });

  it("installs onnxruntime-node's CUDA variant with the variable its install script reads", () => {
    const npmStage = dockerfile.find((s) => ops(s, "RUN").some((r) => /\bnpm ci\b/.test(r.args)));
    expect(npmStage, "a stage that runs npm ci").toBeDefined();
    const stage = npmStage as Instruction[];
    const run = ops(stage, "RUN").find((r) => /\bnpm ci\b/.test(r.args)) as Instruction;
    expect(run.args).toMatch(/--omit=dev/);
    const variant = envOf(stage).ONNXRUNTIME_NODE_INSTALL;
    // The script reads this variable first, and package.json's allowScripts denies the script to `npm ci`
    // (npm 11), so the stage runs it by hand; onnxruntime-node's own postinstall names the same file.
    expect(read("node_modules/onnxruntime-node/script/install-utils.js")).toMatch(
      /let flag = process\.env\.ONNXRUNTIME_NODE_INSTALL \|\|/,
    );
    expect(JSON.parse(read("package.json")).allowScripts["onnxruntime-node"]).toBe(false);
    const postinstall = JSON.parse(read("node_modules/onnxruntime-node/package.json")).scripts.postinstall as string;
    const script = postinstall.match(/^node \.\/(script\/install)$/)?.[1];
    expect(script, postinstall).toBeDefined();
    expect(run.args).toContain(`node node_modules/onnxruntime-node/${script}`);
    // ...and fails the build when the CUDA provider is still missing after it.
    expect(run.args.lastIndexOf('test -f "$cuda"')).toBeGreaterThan(run.args.indexOf(script as string));
    const metadata = createRequire(import.meta.url)(
      join(ROOT, "node_modules/onnxruntime-node/script/install-metadata.js"),
    ) as { manifests: Record<string, unknown> };
    expect(Object.keys(metadata.manifests)).toContain(`linux/x64:${variant}`);
  });

  it("switches to a non-root user before the entrypoint", () => {
    const userAt = runtimeStage.findLastIndex((i) => i.op === "USER");
    const entryAt = runtimeStage.findIndex((i) => i.op === "ENTRYPOINT" || i.op === "CMD");
    expect(userAt, "USER in the runtime stage").toBeGreaterThanOrEqual(0);
    expect(userAt).toBeLessThan(entryAt);
    const user = (runtimeStage[userAt] as Instruction).args.split(":")[0];
    expect(["root", "0"]).not.toContain(user);
  });

  it("checks its health on the worker's liveness path and default port", async () => {
    const checks = ops(runtimeStage, "HEALTHCHECK");
    expect(checks).toHaveLength(1);
    const args = (checks[0] as Instruction).args;
    expect(args).not.toMatch(/^NONE\b/);
    const path = args.match(/127\.0\.0\.1:[^/\s"'`]+(\/[\w./-]*)/)?.[1];
    expect(path, "a URL on the worker's own health server").toBeDefined();
    await expectLiveness(path as string);
    const port = Number(envOf(runtimeStage).EDGESWARM_PORT);
    expect(port).toBe(podOptions.port);
    expect(ops(runtimeStage, "EXPOSE").map((i) => Number(i.args))).toContain(port);
  });

  it("starts the same worker command the tests start", () => {
    const entry = ops(runtimeStage, "ENTRYPOINT").at(-1);
    const cmd = ops(runtimeStage, "CMD").at(-1);
    const argv = [...(entry ? execForm(entry.args) : []), ...(cmd ? execForm(cmd.args) : [])];
    expect(argv[0]).toBe("node");
    const bin = testedWorkerBin();
    expect(posix.resolve(workdir, argv[1] as string)).toBe(imagePathOf(bin));
    expect(imagePathOf(bin)).toBe(posix.join(workdir, bin));
    expect(JSON.parse(read("package.json")).bin["edgeswarm-worker"]).toBe(bin);
  });

  it("copies every file the worker loads, where the worker expects it, past .dockerignore", () => {
    const needed = [
      ...importGraph(testedWorkerBin()),
      // "type": "module" for tsx, and the compiler settings it compiles with
      "package.json",
      "tsconfig.json",
      "tsconfig.base.json",
      ...bundledModelFiles(),
    ];
    expect(needed).toContain("worker-gpu/cli.ts");
    // --runtime web's threads and the web runner they share with the browser: no client/ file.
    expect(needed).toContain("worker-gpu/web/web-thread.ts");
    expect(needed).toContain("shared/runner/web-runner.ts");
    expect(needed.filter((f) => f.startsWith("client/"))).toEqual([]);
    expect(needed).toContain("shared/index.ts");
    expect(
      needed.filter((f) => !existsSync(join(ROOT, f))),
      "files the worker needs that the repository lacks",
    ).toEqual([]);
    const missing = needed.filter((f) => imagePathOf(f) !== posix.join(workdir, f) || dockerIgnored(f));
    expect(missing, "files the image lacks or has elsewhere").toEqual([]);
    // Production dependencies come from the install stage, never from a developer's node_modules.
    expect(dockerIgnored("node_modules/onnxruntime-node/package.json")).toBe(true);
    expect(dockerIgnored(".dev.vars")).toBe(true);
    expect(ops(runtimeStage, "COPY").some((i) => /--from=\S+\s+\S*node_modules\s/.test(i.args))).toBe(true);
  });
});

describe("WebGPU workers (worker-gpu/k8s/webgpu, the image's Vulkan loader)", () => {
  const OVERLAY = `${K8S}/webgpu`;
  const overlay = yamlDocs(`${OVERLAY}/kustomization.yaml`)[0] as Obj;

  /** The base Deployment's container with the overlay's JSON patches applied (kustomize's "add" to a list's end). */
  function patchedContainer(): Obj {
    const patched = structuredClone(deployment) as Obj;
    for (const p of overlay.patches as Obj[]) {
      expect(p.target).toMatchObject({ kind: "Deployment", name: deployment.metadata.name });
      for (const op of (parseAllDocuments(p.patch as string)[0]?.toJS() ?? []) as Obj[]) {
        expect(op.op).toBe("add");
        const path = (op.path as string).split("/").slice(1);
        const list = path.slice(0, -1).reduce((o: Obj, k) => o[k], patched) as unknown[];
        expect(path.at(-1)).toBe("-");
        list.push(op.value);
      }
    }
    return patched.spec.template.spec.containers[0] as Obj;
  }

  it("builds on the base and merges into its ConfigMap", () => {
    expect(overlay.resources).toEqual([".."]);
    const merge = (overlay.configMapGenerator as Obj[]).find((g) => g.name === "edgeswarm-worker");
    expect(merge?.behavior).toBe("merge");
  });

  it("runs the pods on webgpu only, in the gpu pool, with the graphics capability NVIDIA's toolkit needs for Vulkan", () => {
    const literals = (overlay.configMapGenerator as Obj[])[0]?.literals as string[];
    const c = patchedContainer();
    const { env } = containerEnvironment(c);
    Object.assign(
      env,
      Object.fromEntries(literals.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)])),
    );
    const options = parseOptions((c.args as string[] | undefined) ?? [], env) as WorkerOptions;
    expect(options).toMatchObject({ device: "webgpu", runtime: "web", pool: "gpu" });
    expect(env.NVIDIA_DRIVER_CAPABILITIES?.split(",")).toEqual(
      expect.arrayContaining(["compute", "utility", "graphics"]),
    );
    // The same GPU request as the base: one each.
    expect(c.resources.limits["nvidia.com/gpu"]).toBe(1);
  });

  it("installs the Vulkan loader in the image, and an ICD manifest for NVIDIA's driver library", () => {
    const runs = ops(runtimeStage, "RUN").map((r) => r.args);
    expect(runs.some((r) => /apt-get install\b[^&]*\blibvulkan1\b/.test(r))).toBe(true);
    expect(runs.some((r) => /libGLX_nvidia\.so\.0/.test(r) && /\/vulkan\/icd\.d\//.test(r))).toBe(true);
    // webgpu is a production dependency, so the install stage's `npm ci --omit=dev` brings Dawn.
    expect(JSON.parse(read("package.json")).dependencies.webgpu).toBeDefined();
  });
});

describe("docs/deployment.md's Kubernetes section", () => {
  const doc = read("docs/deployment.md");
  const start = doc.indexOf("\n## Deploying the GPU workers to Kubernetes");
  const end = doc.indexOf("\n## ", start + 1);
  const section = doc.slice(start, end < 0 ? undefined : end);

  /** The table row whose first cell is `field`: its value cell, and the coordinator-setting cell. */
  function row(field: string): [string, string] {
    const line = section.split("\n").find((l) => l.startsWith(`| \`${field}\``));
    if (!line) throw new Error(`docs/deployment.md's Kubernetes table has no row for ${field}`);
    const cells = line.split("|").map((c) => c.trim());
    return [cells[2] as string, cells[3] as string];
  }

  it("exists and gives the commands for this layout", () => {
    expect(start).toBeGreaterThan(0);
    expect(section).toContain("kubectl apply -k worker-gpu/k8s");
    expect(section).toContain("-f worker-gpu/Dockerfile");
  });

  it("states the ScaledObject's numbers and the coordinator settings they come from", () => {
    // ScaledObject field, coordinator setting, and how many of the setting's units one of the field's is
    const fields: [string, keyof PoolScaling, number][] = [
      ["targetValue", "target_per_replica", 1],
      ["activationTargetValue", "activation_threshold", 1],
      ["minReplicaCount", "min_replicas", 1],
      ["maxReplicaCount", "max_replicas", 1],
      ["stabilizationWindowSeconds", "scale_down_window_ms", 1000],
    ];
    const manifest = scaledObjectScaling();
    for (const [field, setting, unit] of fields) {
      const [stated, source] = row(field);
      expect(Number(stated.replaceAll(/[\s,_]/g, "")) * unit, field).toBe(manifest[setting]);
      expect(source, field).toContain(setting);
    }
  });
});
