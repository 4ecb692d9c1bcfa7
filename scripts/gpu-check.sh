#!/usr/bin/env bash
# The runner conformance suite and bench:runners on a bare Linux GPU machine (no Node, no network),
# through WebGPU (Dawn's Vulkan backend) and onnxruntime's CPU runtimes side by side.
#   scripts/gpu-check.sh pack [OUT]   here: packs Node, the packages (Linux x64 only), the libvulkan1 .deb,
#                                     the sources and models into OUT (default dist/gpu-check.tar.xz, < 64 MiB)
#   scripts/gpu-check.sh run          there, from the unpacked folder: unpacks the Vulkan loader if the
#                                     machine lacks one, finds the driver's ICD, runs both; output in results/
#   scripts/gpu-check.sh --help       this text. Each step of run ends within GPU_CHECK_STEP_TIMEOUT s (3600).
# Tested here against SwiftShader (VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json).
set -euo pipefail

STEP_TIMEOUT="${GPU_CHECK_STEP_TIMEOUT:-3600}"
# After bench:runners has written its table, how long its process may take to end before it is ended.
EXIT_GRACE="${GPU_CHECK_EXIT_GRACE:-60}"

pack() {
  local root out stage
  root="$(cd "$(dirname "$0")/.." && pwd)"
  out="$(realpath -m "${1:-$root/dist/gpu-check.tar.xz}")"
  stage="$(mktemp -d)/edgeswarm-gpu-check"
  mkdir -p "$stage/bin" "$stage/debs" "$(dirname "$out")"
  cp "$(command -v node)" "$stage/bin/node"
  (cd "$stage/debs" && apt-get download libvulkan1 2>/dev/null >/dev/null)
  cd "$root"
  # Sources the suite and the bench load, and the bundled models.
  cp -r --parents package.json tsconfig.json tsconfig.base.json vitest.config.ts shared worker-gpu/web worker-gpu/runner \
    bench/*.ts test/support test/node/runner-runtimes.test.ts test/node/runner-dawn.test.ts \
    scripts/gpu-check.sh scripts/lib/wrangler-dev.ts "$stage/"
  # The repository's vitest config starts workerd for its workers suite; here only the Node suite runs.
  printf '%s\n' 'export default { test: { include: ["test/node/**/*.test.ts"], environment: "node" } };' \
    > "$stage/vitest.gpu-check.config.mjs"
  # The models the repository tracks (not models/bench's large benchmark encoders, built on demand).
  git ls-files -z models ':!models/build' ':!models/data' | tar --null -T - -cf - | tar -C "$stage" -xf -
  # The packages those import, with everything they depend on, found from package.json files (flat node_modules).
  node -e '
    const fs = require("fs"), path = require("path");
    const seen = new Set(), todo = process.argv.slice(1);
    while (todo.length) {
      const name = todo.pop();
      if (seen.has(name) || !fs.existsSync(`node_modules/${name}/package.json`)) continue;
      seen.add(name);
      const pkg = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8"));
      todo.push(...Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }));
    }
    fs.writeFileSync("/dev/stdout", [...seen].map((n) => `node_modules/${n}`).join("\n"));
  ' vitest tsx onnxruntime-web onnxruntime-node webgpu comlink zod ws prom-client @huggingface/tokenizers \
    @esbuild/linux-x64 @rollup/rollup-linux-x64-gnu > "$stage/packages.txt"
  # Only Linux x64 native code, and of onnxruntime-web only the builds Node loads.
  tar -cf - --exclude 'node_modules/onnxruntime-node/bin/napi-v6/darwin' --exclude 'node_modules/onnxruntime-node/bin/napi-v6/win32' \
    --exclude 'node_modules/webgpu/dist/darwin-universal' --exclude 'node_modules/webgpu/dist/win32-*' \
    --files-from "$stage/packages.txt" | tar -C "$stage" -xf -
  rm -rf "$stage"/node_modules/onnxruntime-node/bin/napi-v6/{darwin,win32} "$stage"/node_modules/onnxruntime-node/bin/napi-v6/linux/arm64 \
    "$stage"/node_modules/webgpu/dist/{darwin-universal,linux-arm64,win32-arm64,win32-x64}
  find "$stage/node_modules/onnxruntime-web/dist" -type f ! -name 'ort.node.min.mjs' ! -name 'ort.webgpu.bundle.min.mjs' \
    ! -name 'ort-wasm-simd-threaded.mjs' ! -name 'ort-wasm-simd-threaded.wasm' ! -name 'ort-wasm-simd-threaded.asyncify.*' -delete
  find "$stage/node_modules" -name '*.map' -delete
  # Node's and Dawn's symbol tables (debugging only; what loading needs is kept): 16 MB, which kept the pack
  # under 64 MiB once the models grew.
  strip "$stage/bin/node" "$stage/node_modules/webgpu/dist/linux-x64/dawn.node"
  tar -C "$(dirname "$stage")" -cf - edgeswarm-gpu-check | xz -T0 -9 > "$out"
  echo "packed $(du -h "$out" | cut -f1) into $out (unpacked $(du -sh "$stage" | cut -f1))"
  rm -rf "$(dirname "$stage")"
}

run() {
  cd "$(dirname "$0")/.."
  export PATH="$PWD/bin:$PATH" WRANGLER_SEND_METRICS=false
  # The Vulkan loader: the machine's own, else the packed .deb unpacked here (no root needed).
  # grep without -q: under pipefail, -q's early exit can end ldconfig with SIGPIPE and the test reads "absent".
  if ! ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; then
    mkdir -p vulkan && for deb in debs/*.deb; do dpkg-deb -x "$deb" vulkan 2>/dev/null || (cd vulkan && ar p "../$deb" data.tar.xz | tar -xJ); done
    export LD_LIBRARY_PATH="$PWD/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  # The GPU driver's Vulkan ICD, where NVIDIA's container toolkit or the driver package puts it.
  if [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]; then
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
      /etc/vulkan/icd.d/nvidia_icd.json; do
      if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; break; fi
    done
  fi
  mkdir -p results
  echo "Vulkan ICD: ${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-default search path}}" | tee results/environment.txt
  node --version | tee -a results/environment.txt
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee -a results/environment.txt || true
  local status=0 summary=()
  step conformance "" node node_modules/vitest/vitest.mjs run --config vitest.gpu-check.config.mjs \
    test/node/runner-dawn.test.ts test/node/runner-runtimes.test.ts || status=1
  step runners bench/results/runners.md env BENCH_CHROMIUM=0 node --import tsx bench/runners.ts || status=1
  cp bench/results/runners.md results/ 2>/dev/null || true
  printf '%s\n' "${summary[@]}" | tee results/summary.txt
  echo "results in $PWD/results (exit $status)"
  return "$status"
}

# step NAME DONE_FILE COMMAND...: runs COMMAND under `timeout` (STEP_TIMEOUT s), its output shown and kept in
# results/NAME.txt, and adds a line to `summary`. Once DONE_FILE is written, the process gets EXIT_GRACE s
# to end, then is ended: with onnxruntime-web's WebGPU build loaded, Node's exit waits for V8 to finish
# compiling that 27 MB WASM with TurboFan in the background, which took minutes here (issue 16), and the
# results are already on disk by then.
step() {
  local name="$1" done_file="$2" rc=0 began pid tailer ended=""
  shift 2
  began="$(date +%s)"
  : > "results/$name.txt"
  timeout --kill-after=30 "$STEP_TIMEOUT" "$@" > "results/$name.txt" 2>&1 &
  pid=$!
  tail -n +1 --pid="$pid" -f "results/$name.txt" & tailer=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -n "$done_file" ] && [ -f "$done_file" ] && [ "$(stat -c %Y "$done_file")" -ge "$began" ]; then
      local waited=0
      while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$EXIT_GRACE" ]; do sleep 1; waited=$((waited + 1)); done
      if kill -0 "$pid" 2>/dev/null; then ended=" (results written; its process had not exited ${EXIT_GRACE} s later, so it was ended)"; kill "$pid"; fi
      break
    fi
    sleep 1
  done
  wait "$pid" || rc=$?
  wait "$tailer" 2>/dev/null || true
  if [ -n "$ended" ]; then rc=0; fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then ended=" (timed out after ${STEP_TIMEOUT} s)"; fi
  summary+=("$name: exit $rc in $(($(date +%s) - began)) s$ended")
  return "$rc"
}

# In braces, ending in exit: bash reads the whole block before running it, so the file can change meanwhile.
{
  case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) run ;;
    -h | --help | help) sed -n '2,9p' "$0" ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
  esac
  exit
}
