#!/usr/bin/env python3
"""Issue #6: does reflect-loadtest agree with guidellm (PyPI) on the same traffic?

Starts one reflect-worker and one reflect-router on loopback and runs both tools AT THE SAME TIME
against the router's OpenAI HTTP API (/v1/chat/completions, streaming), each sending exactly
--requests requests of its own: synthetic prompts of --prompt-tokens, --output-tokens outputs with
ignore_eos, at --temperature, arriving by --profile:

  constant    open loop, one request every 1/--rate s from each tool (the default). The second
              tool starts half a period after the first, so the server sees one evenly spaced
              stream at twice the rate in which the tools take turns: every request of either
              tool finds the server in the same state.
  poisson     open loop, Poisson arrivals at --rate from each tool.
  concurrent  closed loop, --concurrency streams from each tool.

Why at the same time: on a small machine the server's speed drifts by more than the 10% the
comparison must resolve (consecutive runs of the same tool measured 90 to 121 ms per output token
on 2 vCPUs), so one tool after the other compares the machine's moods, not the tools. Run
together, both measure the same server at the same moments, and what differs is the tools.

Both tools count the same way: exactly --requests requests each, every one finished (guidellm's
max_requests constraint, reflect-loadtest's max_requests), rates over the time from the start to
the end of the last request. (guidellm's window starts at its first request; reflect-loadtest's at
its run start, which is its first request except under Poisson arrivals, where the first comes one
random gap later.)

  guidellm          `guidellm run` with the openai_http backend and synthetic_text data (it sends
                    max_completion_tokens and ignore_eos), the model's own tokenizer.json for
                    prompt lengths; guidellm sends no temperature by itself, so the comparison adds
                    it to the request body.
  reflect-loadtest  a scenario with fixed lengths, no system prompt, arrivals evenly spaced
                    (constant) or Poisson; started with --start_at once guidellm's first request
                    reaches the router (polled from /metrics).

The server (worker and router) and the clients run on disjoint CPUs (--server-cpus,
--client-cpus; by default the last CPU serves and the others run the clients).

Compares output tokens/s, requests/s, TTFT p50, inter-token latency p50 and end-to-end p50, and
exits 1 when any differs by more than --tolerance (default 10%). Also prints the prompt and output
tokens per request that the server counted for both tools together, and guidellm's own prompt
tokens per request (the check that both sent the same traffic).
Writes both tools' JSON and compare.json to --out. guidellm must be installed (pip install guidellm,
in its own venv is fine: --guidellm PATH). A model whose speed guidellm's client keeps up with on
one core (the 2-layer 1b shape; `tiny` makes ~300 tokens/s, more than guidellm reads there):
  build/tools/reflect/reflect mkmodel --preset 1b --layers 2 --dtype bf16 --out /tmp/mid
  tools/bench/guidellm_compare.py --guidellm /tmp/gllm/bin/guidellm --model /tmp/mid \\
      --rate 0.5 --requests 150 --out /tmp/compare
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from router_bench import Server, wait_router_ready  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]

# How long reflect-loadtest needs from its launch to its run start (process start, connection,
# probe request): its --start_at is at least this far ahead.
STARTUP_SECONDS = 1.5


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "build")
    parser.add_argument("--model", type=pathlib.Path, default=ROOT / "build/test-models/tiny")
    parser.add_argument("--guidellm", default=shutil.which("guidellm") or "guidellm")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--profile", choices=["constant", "poisson", "concurrent"],
                        default="constant")
    parser.add_argument("--rate", type=float, default=0.5,
                        help="requests/s from each tool (open loop)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="streams from each tool (closed loop)")
    parser.add_argument("--requests", type=int, default=150, help="from each tool")
    parser.add_argument("--temperature", type=float, default=0.0, help="sent by both tools")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=32)
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


def router_metrics(http_address):
    """The router's /metrics values by name, summed over label sets."""
    text = urllib.request.urlopen(f"http://{http_address}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        name = series.partition("{")[0]
        values[name] = values.get(name, 0.0) + float(value)
    return values


def token_totals(http_address):
    metrics = router_metrics(http_address)
    return {name: metrics.get(name, 0.0)
            for name in ("reflect_prompt_tokens_total", "reflect_generation_tokens_total")}


def served_per_request(before, after, requests):
    """Tokens the server counted per request between two token_totals."""
    return {name.removeprefix("reflect_").removesuffix("_total") + "_per_request":
            (after[name] - before[name]) / requests for name in after}


def start_guidellm(args, http_address):
    config = {
        "backend": {"kind": "openai_http", "target": f"http://{http_address}",
                    "model": args.model.name, "request_format": "/v1/chat/completions",
                    "api_routes": {"/health": "healthz"},
                    "extras": {"body": {"temperature": args.temperature}}},
        "profile": ({"kind": "concurrent", "streams": args.concurrency}
                    if args.profile == "concurrent" else {"kind": args.profile, "rate": args.rate}),
        "data": [{"kind": "synthetic_text", "prompt_tokens": args.prompt_tokens,
                  "output_tokens": args.output_tokens}],
        "constraints": [{"kind": "max_requests", "count": args.requests}],
        "tokenizer": {"kind": "huggingface_auto", "model": str(args.model)},
    }
    config_path = args.out / "guidellm-config.json"
    config_path.write_text(json.dumps({"spec": config}, indent=2))
    argv = ["taskset", "-c", args.client_cpus, args.guidellm, "run", "-c", str(config_path),
            "--output", f"kind=json,path={args.out / 'guidellm.json'}",
            "--disable-console-interactive"]
    print("$", " ".join(argv), flush=True)
    log = open(args.out / "logs/guidellm.log", "wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def wait_first_request(http_address, guidellm, timeout=300):
    """The wall time at which the router first holds a request (guidellm's first), polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if guidellm.poll() is not None:
            sys.exit(f"guidellm_compare: guidellm exited ({guidellm.returncode}) before sending")
        metrics = router_metrics(http_address)
        if metrics.get("reflect_num_requests_running", 0) + \
                metrics.get("reflect_num_requests_waiting", 0) > 0:
            return time.time()
        time.sleep(0.005)
    sys.exit(f"guidellm_compare: guidellm sent nothing within {timeout} s")


def loadtest_start_time(args, guidellm_first_request):
    """When reflect-loadtest's run starts. Constant: its arrivals (at its start, then every
    1/rate) fall halfway between guidellm's."""
    earliest = time.time() + STARTUP_SECONDS
    if args.profile != "constant":
        return earliest
    period = 1 / args.rate
    start = guidellm_first_request + period / 2
    while start < earliest:
        start += period
    return start


def run_loadtest(args, http_address, start_at):
    scenario = {
        "name": "guidellm-compare", "description": f"{args.profile}, fixed lengths (issue #6)",
        "protocol": "http", "max_requests": args.requests, "seed": 1,
        "workload": {"prompt_tokens": {"kind": "fixed", "tokens": args.prompt_tokens},
                     "output_tokens": {"kind": "fixed", "tokens": args.output_tokens},
                     "add_reflection_system_prompt": False, "temperature": args.temperature,
                     "sampling_seed": 0},
        "slo": {"ttft_seconds": 60, "time_to_first_output_token_seconds": 600,
                "inter_token_latency_seconds": 60},
        "client_timeout_seconds": 600}
    if args.profile == "concurrent":
        scenario.update(mode="closed", concurrency=args.concurrency, run_length_seconds=86400)
    else:
        # Long enough to plan --requests arrivals; the run stops sending at the count.
        arrivals = {"profile": "constant", "requests_per_second": args.rate}
        arrivals.update({"spacing": "even"} if args.profile == "constant" else {"burstiness": 1})
        scenario.update(mode="open", run_length_seconds=2 * args.requests / args.rate + 10,
                        arrivals=arrivals)
    scenario_path = args.out / "loadtest-scenario.json"
    scenario_path.write_text(json.dumps(scenario, indent=2))
    report_path = args.out / "loadtest.json"
    argv = ["taskset", "-c", args.client_cpus, str(args.build_dir / "loadtest/reflect-loadtest"),
            f"--scenario={scenario_path}", f"--http_target={http_address}",
            f"--json_out={report_path}", f"--start_at={start_at:.6f}"]
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


def run_both(args, http_address):
    """Both tools' reports, and the tokens per request the server counted while they ran."""
    before = token_totals(http_address)
    guidellm = start_guidellm(args, http_address)
    try:
        first_request = wait_first_request(http_address, guidellm)
        ours = run_loadtest(args, http_address, loadtest_start_time(args, first_request))
        if guidellm.wait() != 0:
            sys.exit(f"guidellm_compare: guidellm failed; log: {args.out / 'logs/guidellm.log'}")
    finally:
        if guidellm.poll() is None:
            guidellm.kill()
    theirs = json.loads((args.out / "guidellm.json").read_text())
    # The probe request reflect-loadtest sends before its run counts too: 1 request of 1 token.
    served = served_per_request(before, token_totals(http_address), 2 * args.requests + 1)
    return ours, theirs, served


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
        ours_report, theirs_report, served = run_both(args, router.addresses["http"])
    finally:
        router.stop()
        worker.stop()
    ours, theirs = loadtest_figures(ours_report), guidellm_figures(theirs_report)
    guidellm_requests = theirs_report["benchmarks"][0]["requests"]["successful"]
    counts = {"reflect_loadtest_ok": ours_report["outcomes"]["ok"],
              "guidellm_successful": len(guidellm_requests),
              "guidellm_prompt_tokens_per_request":
                  statistics.mean(r["prompt_tokens"] for r in guidellm_requests)}
    rows, passed = [], True
    for name in ours:
        difference = abs(ours[name] - theirs[name]) / max(abs(theirs[name]), 1e-12)
        within = difference <= args.tolerance
        passed = passed and within
        rows.append({"figure": name, "reflect_loadtest": ours[name], "guidellm": theirs[name],
                     "difference": difference, "within_tolerance": within})
    (args.out / "compare.json").write_text(json.dumps(
        {"arguments": {k: str(v) for k, v in vars(args).items()}, "requests": counts,
         "served_per_request": served, "figures": rows}, indent=2))
    print(f"\nrequests completed: {counts}; the server counted per request: {served}")
    print("\n| figure | reflect-loadtest | guidellm | difference |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['figure']} | {row['reflect_loadtest']:.4g} | {row['guidellm']:.4g} | "
              f"{100 * row['difference']:.1f}%{'' if row['within_tolerance'] else ' FAIL'} |")
    print(f"mean difference {100 * statistics.mean(r['difference'] for r in rows):.1f}%")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
