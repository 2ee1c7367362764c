#!/usr/bin/env python3
"""The CUDA backend's logits against the CPU backend and Hugging Face transformers.

Reuses the CPU golden-logits test's material rather than making its own: the models
tests/make_test_models.sh builds with `reflect mkmodel`, and the prompts, logit positions and
transformers references of tests/fixtures/golden (tools/fixtures/make_golden_logits.py made them;
docs/models.md explains them). For each test model it runs `reflect logits` (which prefills each
prompt in chunks ending at the logit positions, then continues it greedily for 64 tokens) on the
backend under test (--backend, default cuda) and on the CPU backend, then checks, where d is the
largest |logit difference| over every row and every token:

  <backend>-vs-cpu/<model>       tiny-bf16 (bf16 weights, so both backends compute over exactly
                                 the same weights): d <= T, the manifest's bf16 tolerance (1.5x the
                                 distance D between torch's bf16 and f32-upcast references: 0.18
                                 for the committed fixtures). tiny and gqa-small (f32 weights,
                                 rounded to bf16 on the GPU): d <= 2T. Greedy agreement is shown,
                                 not required: bf16 rounding may flip near-ties.
  <backend>-vs-transformers      tiny-bf16 against the committed transformers references:
  -fixtures                      d(torch f32) <= T and d(torch bf16) <= 2D (two independent bf16
                                 roundings of the same computation).
  <backend>-vs-transformers      only when torch and transformers import and torch sees the device
  -live                          (--torch-device, default cuda): tiny-bf16 loaded by transformers
                                 (eager attention) in bf16 and in f32 (TF32 off) on that device:
                                 d(f32) <= T and d(bf16) <= 2D. Otherwise reported as skipped.

Prints one line per check, then one JSON line {"checks": [...], "passed": true|false}; with
--json-out also writes that JSON there. Exit codes: 0 every check passed (skipped ones aside),
1 a check failed, 2 the checks could not run (no reflect binary, no numpy, a run that failed).

Usage (from the repo root, after building `reflect`):

  python3 tools/bench/hf_logits_check.py --reflect build/tools/reflect/reflect
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
GREEDY_TOKENS = 64
MODELS = ("tiny-bf16", "tiny", "gqa-small")
BF16_MODEL = "tiny-bf16"

try:
    import numpy as np
except ImportError:
    sys.exit("hf_logits_check: numpy is required (python3 -m pip install numpy)")


def run_reflect_logits(reflect, model_dir, manifest_path, backend, out_path):
    """Runs `reflect logits`; returns (logits [rows, vocab] float32, greedy continuations)."""
    command = [str(reflect), "logits", "--model", str(model_dir), "--logit_requests",
               str(manifest_path), "--logits_out", str(out_path), "--greedy_tokens",
               str(GREEDY_TOKENS), "--backend", backend]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    logits = np.fromfile(out_path, dtype="<f4").reshape(summary["rows"], summary["vocab_size"])
    return logits, summary["greedy"]


def largest_difference(actual, expected):
    """max |actual - expected|; inf when either has a NaN (a NaN never passes)."""
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float("inf") if np.isnan(difference).any() else float(difference.max())


def greedy_agreement(actual, expected):
    """How many leading tokens agree, per prompt, as text: "64/12/5 of 64 tokens"."""
    counts = []
    for mine, theirs in zip(actual, expected):
        count = 0
        while count < min(len(mine), len(theirs)) and mine[count] == theirs[count]:
            count += 1
        counts.append(str(count))
    return f"{'/'.join(counts)} of {GREEDY_TOKENS} tokens"


def check(name, comparisons, detail=""):
    """A check from (label, difference, tolerance) comparisons; prints its line."""
    passed = all(difference <= tolerance for _, difference, tolerance in comparisons)
    numbers = ", ".join(f"d({label}) {difference:.4g} <= {tolerance:.3g}"
                        for label, difference, tolerance in comparisons)
    print(f"{'PASS' if passed else 'FAIL'} {name}: {numbers}{'; ' + detail if detail else ''}",
          flush=True)
    return {"name": name, "result": "pass" if passed else "fail",
            "comparisons": [{"against": label, "max_abs_difference": difference,
                             "tolerance": tolerance}
                            for label, difference, tolerance in comparisons],
            "detail": detail}


def skipped(name, reason):
    print(f"SKIP {name}: {reason}", flush=True)
    return {"name": name, "result": "skipped", "detail": reason}


def live_transformers_logits(model_dir, prompts, positions, device):
    """Logit rows of transformers on `device` in bf16 and in f32, or a reason it cannot run."""
    try:
        import torch
        from transformers import LlamaForCausalLM
    except ImportError as error:
        return None, f"torch / transformers not importable ({error})"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = {}
    for label, dtype in (("bf16", torch.bfloat16), ("f32", torch.float32)):
        model = LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype,
                                                 attn_implementation="eager").to(device).eval()
        label_rows = []
        with torch.no_grad():
            for prompt, prompt_positions in zip(prompts, positions):
                logits = model(torch.tensor([prompt], device=device)).logits[0].float().cpu()
                label_rows.extend(logits[position].numpy() for position in prompt_positions)
        rows[label] = np.stack(label_rows)
        del model
    return rows, ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reflect", type=pathlib.Path, required=True,
                        help="the built reflect binary (build/tools/reflect/reflect)")
    parser.add_argument("--models", type=pathlib.Path, default=None,
                        help="where the test models are (built there when missing; default: "
                             "<build>/test-models, the tests' directory)")
    parser.add_argument("--fixtures", type=pathlib.Path, default=REPO / "tests/fixtures/golden")
    parser.add_argument("--backend", default="cuda", help="the backend under test")
    parser.add_argument("--torch-device", default="cuda",
                        help="where transformers runs for the live check")
    parser.add_argument("--json-out", type=pathlib.Path, default=None)
    arguments = parser.parse_args()

    reflect = arguments.reflect.resolve()
    if not reflect.is_file():
        sys.exit(f"hf_logits_check: no reflect binary at {reflect}")
    models = arguments.models or reflect.parents[2] / "test-models"
    subprocess.run([str(REPO / "tests/make_test_models.sh"), str(reflect), str(models)],
                   check=True, capture_output=True)
    manifest_path = arguments.fixtures / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    references = {reference["name"]: reference for reference in manifest["references"]}
    bf16_tolerance = references["tiny-bf16-torch-f32"]["logit_tolerance"]
    bf16_distance = manifest["bf16_reference_distance"]
    vocab = manifest["vocab_size"]
    backend = arguments.backend

    checks = []
    with tempfile.TemporaryDirectory(prefix="hf-logits-check-") as work:
        work = pathlib.Path(work)
        runs = {}
        try:
            for model in MODELS:
                for run_backend in dict.fromkeys((backend, "cpu")):
                    runs[model, run_backend] = run_reflect_logits(
                        reflect, models / model, manifest_path, run_backend,
                        work / f"{model}-{run_backend}.bin")
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"hf_logits_check: {error}", file=sys.stderr)
            sys.exit(2)

        for model in MODELS:
            logits, greedy = runs[model, backend]
            cpu_logits, cpu_greedy = runs[model, "cpu"]
            tolerance = bf16_tolerance if model == BF16_MODEL else 2 * bf16_tolerance
            agreement = greedy_agreement(greedy, cpu_greedy)
            checks.append(check(f"{backend}-vs-cpu/{model}",
                                [("cpu", largest_difference(logits, cpu_logits), tolerance)],
                                f"greedy agrees for {agreement}"))

        logits, greedy = runs[BF16_MODEL, backend]
        comparisons = []
        for name, tolerance in (("tiny-bf16-torch-f32", bf16_tolerance),
                                ("tiny-bf16-torch-bf16", 2 * bf16_distance)):
            reference = np.fromfile(arguments.fixtures / references[name]["logits_file"],
                                    dtype="<f4").reshape(-1, vocab)
            comparisons.append((name, largest_difference(logits, reference), tolerance))
        agreement = greedy_agreement(greedy, references["tiny-bf16-torch-f32"]["greedy"])
        checks.append(check(f"{backend}-vs-transformers-fixtures/{BF16_MODEL}", comparisons,
                            f"greedy agrees with torch f32 for {agreement}"))

        live_name = f"{backend}-vs-transformers-live/{BF16_MODEL}"
        live, reason = live_transformers_logits(models / BF16_MODEL, manifest["prompts"],
                                                manifest["logit_positions"],
                                                arguments.torch_device)
        if live is None:
            checks.append(skipped(live_name, reason))
        else:
            checks.append(check(live_name, [
                (f"torch f32 on {arguments.torch_device}", largest_difference(logits, live["f32"]),
                 bf16_tolerance),
                (f"torch bf16 on {arguments.torch_device}",
                 largest_difference(logits, live["bf16"]), 2 * bf16_distance)]))

    passed = all(entry["result"] != "fail" for entry in checks)
    summary = {"checks": checks, "passed": passed}
    print(json.dumps(summary))
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
