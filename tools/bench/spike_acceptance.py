#!/usr/bin/env python3
"""Issue #6 acceptance on the CPU cluster: a playground launch at 10x the sustainable rate.

Starts one reflect-worker and one reflect-router on loopback, then with reflect-loadtest:

  1. capacity   a closed loop of --concurrency requests (the replica's batch, --max_num_seqs) with
                the playground-launch workload for --capacity-seconds: the steady-state capacity
                in goodput output tokens/s (averaged over the 1 s windows from 10 s to the end of
                sending), and the sustainable request rate = that capacity / the mean output
                tokens of its ok requests.
  2. spike      loadtest/scenarios/playground-launch.json with --rate_scale set so that its
                baseline is the sustainable rate (the spike is then 10x it for 60 s).

The router admits at most --concurrency requests in flight, what the replica runs at once, and
queues none beyond them: with minute-long traces a queued request would wait for a slot far
longer than the TTFT SLO, so it is refused at once with a retry hint instead. Checks, from the spike run's JSON report:

  - no request lost or hung: planned = recorded, no error, no timeout;
  - rejection latency p99 <= 50 ms;
  - admitted requests meet the scenario's TTFT SLO at p99;
  - goodput during the spike (goodput output tokens/s averaged over the spike's windows) >= 90%
    of the capacity;
  - every KV block is free after the run (reflect_kv_cache_blocks{state="used"} == 0).

Writes capacity.json/html, spike.json/html and summary.json into --out, prints a table, and exits
1 when a check fails. Usage:
  tools/bench/spike_acceptance.py --model build/test-models/tiny --out docs/examples/spike
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from router_bench import Server, wait_router_ready  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "loadtest" / "scenarios" / "playground-launch.json"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "build")
    parser.add_argument("--model", type=pathlib.Path, default=ROOT / "build/test-models/tiny")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--capacity-seconds", type=int, default=120)
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--spike-multiplier", type=float, default=10.0)
    return parser.parse_args()


def metric_sum(address, name, label=""):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_loadtest(args, router, worker, scenario, name, extra):
    json_out, html_out = args.out / f"{name}.json", args.out / f"{name}.html"
    argv = [str(args.build_dir / "loadtest/reflect-loadtest"), f"--scenario={scenario}",
            f"--grpc_target={router.addresses['grpc']}",
            f"--http_target={router.addresses['http']}",
            f"--replica_metrics={worker.addresses['metrics']}",
            f"--json_out={json_out}", f"--html_out={html_out}", *extra]
    print("$", " ".join(argv), flush=True)
    completed = subprocess.run(argv)
    if completed.returncode != 0:
        sys.exit(f"spike_acceptance: reflect-loadtest {name} exited {completed.returncode}")
    return json.loads(json_out.read_text())


def mean_goodput_tokens(report, start, end):
    """Goodput output tokens/s averaged over the report's windows inside [start, end]."""
    windows = [w for w in report["series"] if w["start_seconds"] >= start and w["end_seconds"] <= end]
    return sum(w["goodput_output_tokens_per_second"] for w in windows) / max(1, len(windows))


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    scenario = json.loads(SCENARIO.read_text())
    worker = Server("worker", [
        str(args.build_dir / "worker/reflect-worker"), f"--model={args.model}", "--port=0",
        "--metrics_port=0", f"--max_num_seqs={args.concurrency}",
        f"--kv_cache_gib={args.kv_cache_gib}"], log_dir, ["listening", "metrics"])
    router = Server("router", [
        str(args.build_dir / "router/reflect-router"), f"--model={args.model}",
        f"--replicas={worker.addresses['listening']}", "--host=127.0.0.1", "--grpc_port=0",
        "--http_port=0", f"--max_in_flight_requests={args.concurrency}",
        f"--max_queued_requests={args.concurrency}"], log_dir, ["grpc", "http"])
    try:
        wait_router_ready(router, "spike_acceptance")
        capacity_scenario = dict(scenario, name="playground-launch-capacity", mode="closed",
                                 concurrency=args.concurrency,
                                 run_length_seconds=args.capacity_seconds)
        del capacity_scenario["arrivals"]
        capacity_path = args.out / "capacity-scenario.json"
        capacity_path.write_text(json.dumps(capacity_scenario, indent=2))
        capacity = run_loadtest(args, router, worker, capacity_path, "capacity", [])
        # Saturated: past the first 10 s of ramp-up, before the closed loop stops sending.
        capacity_tokens = mean_goodput_tokens(capacity, 10, args.capacity_seconds)
        ok = capacity["outcomes"]["ok"]
        mean_output = (capacity["throughput"]["output_tokens_per_second"] *
                       capacity["throughput"]["duration_seconds"] / max(1, ok))
        sustainable = capacity_tokens / mean_output
        rate_scale = sustainable / scenario["arrivals"]["requests_per_second"]
        print(f"capacity {capacity_tokens:.0f} goodput tokens/s, mean output {mean_output:.0f} "
              f"tokens: sustainable {sustainable:.3f} requests/s, rate_scale {rate_scale:.4f}",
              flush=True)
        spike = run_loadtest(args, router, worker, SCENARIO, "spike",
                             [f"--rate_scale={rate_scale:.6f}"])
        time.sleep(2)
        used_blocks = metric_sum(worker.addresses["metrics"], "reflect_kv_cache_blocks",
                                 'state="used"')
    finally:
        router.stop()
        worker.stop()

    outcomes, latency = spike["outcomes"], spike["latency"]
    rejection_p99 = latency["rejection_latency"]["p99_seconds"]
    ttft_p99 = latency["time_to_first_token"]["p99_seconds"]
    spike_start = scenario["arrivals"]["spike_start_seconds"]
    during_spike = mean_goodput_tokens(
        spike, spike_start, spike_start + scenario["arrivals"]["spike_duration_seconds"])
    checks = [
        ("no request lost or hung", outcomes["lost"] == 0 and outcomes["error"] == 0 and
         outcomes["timeout"] == 0, f"{outcomes}"),
        ("rejection latency p99 <= 50 ms", rejection_p99 is not None and rejection_p99 <= 0.05,
         f"{rejection_p99}"),
        ("admitted TTFT p99 <= SLO", ttft_p99 is not None and
         ttft_p99 <= scenario["slo"]["ttft_seconds"], f"{ttft_p99} s"),
        ("spike goodput >= 90% of capacity", during_spike >= 0.9 * capacity_tokens,
         f"{during_spike:.0f} / {capacity_tokens:.0f} tokens/s = "
         f"{100 * during_spike / capacity_tokens:.1f}%"),
        ("all KV blocks free after the run", used_blocks == 0, f"{used_blocks:.0f} used"),
    ]
    summary = {"capacity_goodput_tokens_per_second": capacity_tokens,
               "mean_output_tokens": mean_output, "sustainable_requests_per_second": sustainable,
               "rate_scale": rate_scale, "spike_goodput_tokens_per_second": during_spike,
               "outcomes": outcomes, "rejection_latency_p99_seconds": rejection_p99,
               "ttft_p99_seconds": ttft_p99, "kv_blocks_used_after": used_blocks,
               "checks": {name: passed for name, passed, _ in checks}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n| check | result | measured |\n|---|---|---|")
    for name, passed, measured in checks:
        print(f"| {name} | {'pass' if passed else 'FAIL'} | {measured} |")
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
