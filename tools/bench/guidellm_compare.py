#!/usr/bin/env python3
"""Issue #6: does reflect-loadtest agree with guidellm (PyPI) on the same traffic?

Starts one reflect-worker and one reflect-router on loopback, then runs the same closed-loop
workload over the OpenAI HTTP API (/v1/chat/completions, streaming) twice, one tool after the
other: --concurrency streams, synthetic prompts of --prompt-tokens, --output-tokens outputs with
ignore_eos, for --seconds each.

  guidellm          `guidellm run` with the openai_http backend, a concurrent profile and
                    synthetic_text data (it sends max_completion_tokens and ignore_eos), the
                    model's own tokenizer.json for prompt lengths.
  reflect-loadtest  a closed-loop scenario with fixed lengths and no system prompt.

The server (worker and router) and the clients run on disjoint CPUs (--server-cpus,
--client-cpus; by default the last CPU serves and the others run the client): a client that takes
CPU from the server would change what is measured, not how — guidellm's Python client costs far
more CPU per token than reflect-loadtest.

Compares output tokens/s, requests/s, TTFT p50, inter-token latency p50 and end-to-end p50, and
exits 1 when any differs by more than --tolerance (default 10%). Writes both tools' JSON and
compare.json to --out. guidellm must be installed (pip install guidellm, in its own venv is
fine: --guidellm PATH). Usage:
  tools/bench/guidellm_compare.py --guidellm /tmp/gllm/bin/guidellm --out /tmp/compare
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from router_bench import Server, wait_router_ready  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "build")
    parser.add_argument("--model", type=pathlib.Path, default=ROOT / "build/test-models/tiny")
    parser.add_argument("--guidellm", default=shutil.which("guidellm") or "guidellm")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--tolerance", type=float, default=0.10)
    cpus = sorted(os.sched_getaffinity(0))
    parser.add_argument("--server-cpus", default=str(cpus[-1]),
                        help="CPU list for the worker and router (taskset -c syntax)")
    parser.add_argument("--client-cpus", default=",".join(map(str, cpus[:-1] or cpus)),
                        help="CPU list for guidellm and reflect-loadtest")
    return parser.parse_args()


def cpu_count(cpu_list):
    """How many CPUs a taskset -c list ("0", "2-3,5") names."""
    count = 0
    for part in cpu_list.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def run_guidellm(args, http_address):
    config = {
        "backend": {"kind": "openai_http", "target": f"http://{http_address}",
                    "model": args.model.name, "request_format": "/v1/chat/completions",
                    "api_routes": {"/health": "healthz"}},
        "profile": {"kind": "concurrent", "streams": args.concurrency},
        "data": [{"kind": "synthetic_text", "prompt_tokens": args.prompt_tokens,
                  "output_tokens": args.output_tokens}],
        "constraints": [{"kind": "max_duration", "seconds": args.seconds}],
        "tokenizer": {"kind": "huggingface_auto", "model": str(args.model)},
    }
    config_path = args.out / "guidellm-config.json"
    config_path.write_text(json.dumps({"spec": config}, indent=2))
    report_path = args.out / "guidellm.json"
    argv = ["taskset", "-c", args.client_cpus, args.guidellm, "run", "-c", str(config_path), "--output",
            f"kind=json,path={report_path}", "--disable-console-interactive"]
    print("$", " ".join(argv), flush=True)
    if subprocess.run(argv).returncode != 0:
        sys.exit("guidellm_compare: guidellm failed")
    return json.loads(report_path.read_text())


def run_loadtest(args, router):
    scenario = {
        "name": "guidellm-compare", "description": "closed loop, fixed lengths (issue #6)",
        "protocol": "http", "mode": "closed", "concurrency": args.concurrency,
        "run_length_seconds": args.seconds, "seed": 1,
        "workload": {"prompt_tokens": {"kind": "fixed", "tokens": args.prompt_tokens},
                     "output_tokens": {"kind": "fixed", "tokens": args.output_tokens},
                     "add_reflection_system_prompt": False, "temperature": 0,
                     "sampling_seed": 0},
        "slo": {"ttft_seconds": 60, "time_to_first_output_token_seconds": 600,
                "inter_token_latency_seconds": 60},
        "client_timeout_seconds": 600}
    scenario_path = args.out / "loadtest-scenario.json"
    scenario_path.write_text(json.dumps(scenario, indent=2))
    report_path = args.out / "loadtest.json"
    argv = ["taskset", "-c", args.client_cpus, str(args.build_dir / "loadtest/reflect-loadtest"),
            f"--scenario={scenario_path}",
            f"--http_target={router.addresses['http']}", f"--json_out={report_path}"]
    print("$", " ".join(argv), flush=True)
    if subprocess.run(argv).returncode != 0:
        sys.exit("guidellm_compare: reflect-loadtest failed")
    return json.loads(report_path.read_text())


def guidellm_figures(report):
    """The figures to compare, from guidellm's JSON (benchmarks[0].metrics)."""
    metrics = report["benchmarks"][0]["metrics"]

    def successful(name):
        return metrics[name]["successful"]

    return {
        "output_tokens_per_second": successful("output_tokens_per_second")["mean"],
        "requests_per_second": successful("requests_per_second")["mean"],
        "ttft_p50_seconds": successful("time_to_first_token_ms")["percentiles"]["p50"] / 1000,
        "itl_p50_seconds": successful("inter_token_latency_ms")["percentiles"]["p50"] / 1000,
        "e2e_p50_seconds": successful("request_latency")["percentiles"]["p50"],
    }


def loadtest_figures(report):
    latency, throughput = report["latency"], report["throughput"]
    return {
        "output_tokens_per_second": throughput["output_tokens_per_second"],
        "requests_per_second": throughput["ok_requests_per_second"],
        "ttft_p50_seconds": latency["time_to_first_token"]["p50_seconds"],
        "itl_p50_seconds": latency["time_per_output_token"]["p50_seconds"],
        "e2e_p50_seconds": latency["end_to_end"]["p50_seconds"],
    }


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    pin = ["taskset", "-c", args.server_cpus]
    worker = Server("worker", [*pin, str(args.build_dir / "worker/reflect-worker"),
                               f"--model={args.model}", "--port=0",
                               f"--threads={cpu_count(args.server_cpus)}"],
                    log_dir, ["listening"])
    router = Server("router", [
        *pin, str(args.build_dir / "router/reflect-router"), f"--model={args.model}",
        f"--replicas={worker.addresses['listening']}", "--host=127.0.0.1", "--grpc_port=0",
        "--http_port=0"], log_dir, ["grpc", "http"])
    try:
        wait_router_ready(router, "guidellm_compare")
        ours = loadtest_figures(run_loadtest(args, router))
        theirs = guidellm_figures(run_guidellm(args, router.addresses["http"]))
    finally:
        router.stop()
        worker.stop()
    rows, passed = [], True
    for name in ours:
        difference = abs(ours[name] - theirs[name]) / max(abs(theirs[name]), 1e-12)
        within = difference <= args.tolerance
        passed = passed and within
        rows.append({"figure": name, "reflect_loadtest": ours[name], "guidellm": theirs[name],
                     "difference": difference, "within_tolerance": within})
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2))
    print("\n| figure | reflect-loadtest | guidellm | difference |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['figure']} | {row['reflect_loadtest']:.4g} | {row['guidellm']:.4g} | "
              f"{100 * row['difference']:.1f}%{'' if row['within_tolerance'] else ' FAIL'} |")
    print(f"mean difference {100 * statistics.mean(r['difference'] for r in rows):.1f}%")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
