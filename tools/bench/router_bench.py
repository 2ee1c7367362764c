#!/usr/bin/env python3
"""Router and prefix-cache benchmarks (issue #3): starts reflect-worker and reflect-router on
loopback and measures, from one asyncio client process:

  overhead    time to first token (TTFT) and inter-token latency (ITL) of the same kind of
              request sent straight to the replica (internal Replica.Generate bidi stream) and
              through the router (public Inference.Generate with token ids), interleaved one by
              one; p50/p99 of each arm and the router's addition.
  cpu         router CPU time (utime + stime, /proc/<pid>/stat) per streamed token over a load
              phase of concurrent ignore_eos streams, gross and net of the router's idle CPU.
  streams     N concurrent streams held open through one router; router VmRSS/VmHWM with all of
              them open; then every call cancelled, and the time until the replica's GetLoad
              reports 0 running and 0 waiting.
  prefix      TTFT of a prompt whose long prefix is cached (second request, same prefix, new
              suffix) vs one whose prefix is new (fresh random prefix each pair); medians.
  nohit       throughput of all-distinct prompts with prefix caching on vs off (fresh worker per
              run, alternating, best of --rounds), when reflect-worker has a flag to turn prefix
              caching off; reported as not measured otherwise.

Usage: tools/bench/router_bench.py [--build-dir build] [--model models/tiny]
       [--phases overhead,cpu,streams,prefix,nohit] [--json-out FILE]
Without reflect-router (not built), only the replica arms run (a dry check of the script).

Prints a markdown table and one JSON line ("router_bench": {...}). Messages come from the
descriptor set the build writes (build/proto/reflect.protoset): no generated code.
Every process shares the machine's cores with this client; keep that in mind reading the
figures (BENCHMARKS.md says how many there were).
"""
import argparse
import asyncio
import json
import os
import pathlib
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Token ids drawn for prompts: ordinary vocabulary, far from the special tokens (>= 128000).
TOKEN_LOW, TOKEN_HIGH = 1000, 100000


# ---------------------------------------------------------------------------------------------
# Messages from the descriptor set

class Protos:
    """Message classes of reflect.v1, reflect.internal.v1 and grpc.health.v1, built from the
    FileDescriptorSet the build writes."""

    def __init__(self, protoset: pathlib.Path):
        file_set = descriptor_pb2.FileDescriptorSet()
        file_set.ParseFromString(protoset.read_bytes())
        pool = descriptor_pool.DescriptorPool()
        pending = {file.name: file for file in file_set.file}
        added = set()
        while pending:
            ready = [name for name, file in pending.items()
                     if all(dependency in added for dependency in file.dependency)]
            if not ready:
                sys.exit(f"router_bench: unresolved imports in {protoset}: {sorted(pending)}")
            for name in ready:
                pool.Add(pending.pop(name))
                added.add(name)

        def message(name):
            return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

        self.PublicGenerateRequest = message("reflect.v1.GenerateRequest")
        self.GenerationChunk = message("reflect.v1.GenerationChunk")
        self.ReplicaGenerateRequest = message("reflect.internal.v1.GenerateRequest")
        self.ReplicaGenerateResponse = message("reflect.internal.v1.GenerateResponse")
        self.GetLoadRequest = message("reflect.internal.v1.GetLoadRequest")
        self.LoadReport = message("reflect.internal.v1.LoadReport")


def serializer(message):
    return message.SerializeToString()


class ReplicaClient:
    """reflect.internal.v1.Replica on one grpc.aio channel."""

    def __init__(self, protos: Protos, address: str, channel_options=()):
        self.protos = protos
        self.channel = grpc.aio.insecure_channel(address, options=list(channel_options))
        self._generate = self.channel.stream_stream(
            "/reflect.internal.v1.Replica/Generate", request_serializer=serializer,
            response_deserializer=protos.ReplicaGenerateResponse.FromString)
        self._get_load = self.channel.unary_unary(
            "/reflect.internal.v1.Replica/GetLoad", request_serializer=serializer,
            response_deserializer=protos.LoadReport.FromString)

    def request(self, prompt, max_tokens, request_id="", ignore_eos=True, seed=1):
        request = self.protos.ReplicaGenerateRequest()
        start = request.start
        start.request_id = request_id
        start.prompt_token_ids.extend(prompt)
        # Every field resolved, as the router sends it: greedy, no penalties.
        sampling = start.sampling
        sampling.temperature = 0.0
        sampling.top_p = 1.0
        sampling.top_k = 0
        sampling.min_p = 0.0
        sampling.repetition_penalty = 1.0
        sampling.seed = seed
        sampling.max_tokens = max_tokens
        sampling.ignore_eos = ignore_eos
        return request

    def generate(self, request, timeout=None):
        return self._generate(iter([request]), timeout=timeout)

    async def load(self):
        return await self._get_load(self.protos.GetLoadRequest(), timeout=10)

    async def close(self):
        await self.channel.close()


class RouterClient:
    """reflect.v1.Inference on one grpc.aio channel."""

    def __init__(self, protos: Protos, address: str, channel_options=()):
        self.protos = protos
        self.channel = grpc.aio.insecure_channel(address, options=list(channel_options))
        self._generate = self.channel.unary_stream(
            "/reflect.v1.Inference/Generate", request_serializer=serializer,
            response_deserializer=protos.GenerationChunk.FromString)

    def request(self, prompt, max_tokens, request_id="", ignore_eos=True, seed=1):
        request = self.protos.PublicGenerateRequest()
        request.token_ids.ids.extend(prompt)
        request.sampling.temperature = 0.0
        request.sampling.top_p = 1.0
        request.sampling.seed = seed
        request.sampling.max_tokens = max_tokens
        request.sampling.ignore_eos = ignore_eos
        request.request_id = request_id
        return request

    def generate(self, request, timeout=None):
        return self._generate(request, timeout=timeout)

    async def close(self):
        await self.channel.close()


async def timed_stream(call):
    """Consumes one stream. Returns (start, [(arrival time, tokens in message)], last message)
    counting only messages that carry token ids; times from time.perf_counter()."""
    start = time.perf_counter()
    arrivals = []
    last = None
    async for message in call:
        now = time.perf_counter()
        if message.token_ids:
            arrivals.append((now, len(message.token_ids)))
        last = message
    return start, arrivals, last


# ---------------------------------------------------------------------------------------------
# Processes

class Server:
    """A child process whose stdout announces its addresses ("<word> host:port" lines)."""

    def __init__(self, name, argv, log_dir: pathlib.Path, wanted_words, timeout=120):
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        self.addresses = {}
        self._found = threading.Condition()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        with self._found:
            while not all(word in self.addresses for word in wanted_words):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    self.stop()
                    sys.exit(f"router_bench: {name} did not print {wanted_words} "
                             f"(exit {self.process.poll()}); log: {self.log_path}\n"
                             f"{self.tail()}")
                self._found.wait(min(left, 0.2))

    def _read_stdout(self):
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            parts = line.split()
            with self._found:
                if len(parts) == 2 and ":" in parts[1]:
                    self.addresses.setdefault(parts[0], parts[1])
                self._found.notify_all()

    @property
    def pid(self):
        return self.process.pid

    def tail(self, lines=20):
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields after the command name start at field 3 (state); utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid):
    """VmRSS and VmHWM of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def start_worker(args, log_dir, extra_flags=()):
    argv = [str(args.worker), f"--model={args.model}", "--port=0",
            f"--threads={args.worker_threads}", *extra_flags, *args.worker_arg]
    return Server("worker", argv, log_dir, ["listening"])


async def wait_replica_ready(replica: ReplicaClient, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        try:
            report = await replica.load()
            if report.accepting:
                return report
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            sys.exit("router_bench: the replica never reported accepting")
        await asyncio.sleep(0.2)


def start_router(args, log_dir, replica_address, extra_flags=()):
    argv = [str(args.router), f"--model={args.model}", f"--replicas={replica_address}",
            "--host=127.0.0.1", "--grpc_port=0", "--http_port=0", *extra_flags,
            *args.router_arg]
    router = Server("router", argv, log_dir, ["grpc", "http"])
    wait_router_ready(router, "router_bench", timeout=120)
    return router


def wait_router_ready(router, program, timeout=300):
    """Waits for the router's GET /readyz to answer 200 (a replica in rotation); exits naming
    `program` and showing the router's log when it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{router.addresses['http']}/readyz",
                                        timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or router.process.poll() is not None:
            router.stop()
            sys.exit(f"{program}: router never ready; log: {router.log_path}\n{router.tail()}")
        time.sleep(0.2)


def router_gauges(router):
    """reflect_num_requests_{running,waiting} and friends from the router's /metrics (sums over
    labels); {} when unavailable."""
    try:
        with urllib.request.urlopen(f"http://{router.addresses['http']}/metrics",
                                    timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    gauges = {}
    for line in text.splitlines():
        match = re.match(r"^(reflect_[a-z_]*(?:running|waiting|in_flight|queued)[a-z_]*)"
                         r"(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if match:
            gauges[match.group(1)] = gauges.get(match.group(1), 0.0) + float(match.group(2))
    return gauges


# ---------------------------------------------------------------------------------------------
# Statistics

def percentile(values, fraction):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def milliseconds(seconds):
    return None if seconds is None else round(seconds * 1e3, 3)


def random_prompt(generator, length):
    return [generator.randrange(TOKEN_LOW, TOKEN_HIGH) for _ in range(length)]


# ---------------------------------------------------------------------------------------------
# Phases

async def phase_overhead(args, replica, router_client, results):
    """Sequential requests, alternating direct and routed, fresh random prompts of equal length
    for each (no prefix-cache hits on either side)."""
    generator = random.Random(1)
    arms = {"replica": replica}
    if router_client is not None:
        arms["router"] = router_client
    samples = {name: {"ttft": [], "itl": [], "tokens": 0, "messages": 0} for name in arms}

    async def one(name, index, record):
        client = arms[name]
        request = client.request(random_prompt(generator, args.prompt_tokens), args.max_tokens,
                                 request_id=f"overhead-{name}-{index}")
        start, arrivals, _ = await timed_stream(client.generate(request, timeout=120))
        tokens = sum(count for _, count in arrivals)
        if tokens != args.max_tokens:
            raise RuntimeError(f"{name}: {tokens} tokens streamed, expected {args.max_tokens}")
        if record:
            sample = samples[name]
            sample["ttft"].append(arrivals[0][0] - start)
            sample["itl"].extend(later[0] - earlier[0]
                                 for earlier, later in zip(arrivals, arrivals[1:]))
            sample["tokens"] += tokens
            sample["messages"] += len(arrivals)

    for index in range(args.warmup):
        for name in arms:
            await one(name, index, False)
    names = list(arms)
    for index in range(args.requests):
        # Alternate which arm goes first so neither always follows the other.
        for name in (names if index % 2 == 0 else names[::-1]):
            await one(name, index, True)

    out = {}
    for name, sample in samples.items():
        out[name] = {
            "requests": len(sample["ttft"]),
            "ttft_p50_ms": milliseconds(percentile(sample["ttft"], 0.50)),
            "ttft_p99_ms": milliseconds(percentile(sample["ttft"], 0.99)),
            "itl_p50_ms": milliseconds(percentile(sample["itl"], 0.50)),
            "itl_p99_ms": milliseconds(percentile(sample["itl"], 0.99)),
            "tokens_per_message": round(sample["tokens"] / max(1, sample["messages"]), 3),
        }
    if "router" in out:
        out["added"] = {key: round(out["router"][key] - out["replica"][key], 3)
                        for key in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")}
    results["overhead"] = out


async def run_concurrent(client, prompts, max_tokens, concurrency, tag):
    """Runs every prompt with at most `concurrency` streams open; returns tokens streamed."""
    queue = list(enumerate(prompts))
    queue.reverse()
    streamed = 0

    async def lane():
        nonlocal streamed
        while queue:
            index, prompt = queue.pop()
            request = client.request(prompt, max_tokens, request_id=f"{tag}-{index}")
            _, arrivals, _ = await timed_stream(client.generate(request, timeout=600))
            streamed += sum(count for _, count in arrivals)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return streamed


async def phase_cpu(args, router, router_client, worker, replica, results):
    """Router CPU per streamed token; without a router (a dry check of the script), the
    streams go straight to the replica and only the worker's CPU is reported."""
    generator = random.Random(2)
    client = router_client if router is not None else replica
    watched = {"worker": worker}
    if router is not None:
        watched["router"] = router
    # Idle baseline: what each process burns with nothing to do (load polling, timers).
    idle_start = {name: cpu_seconds(server.pid) for name, server in watched.items()}
    await asyncio.sleep(args.idle_seconds)
    idle_rate = {name: (cpu_seconds(server.pid) - idle_start[name]) / args.idle_seconds
                 for name, server in watched.items()}

    prompts = [random_prompt(generator, args.prompt_tokens) for _ in range(args.load_streams)]
    before = {name: cpu_seconds(server.pid) for name, server in watched.items()}
    client_before = sum(os.times()[:2])
    wall_start = time.perf_counter()
    streamed = await run_concurrent(client, prompts, args.load_tokens, args.load_streams, "cpu")
    wall = time.perf_counter() - wall_start
    used = {name: cpu_seconds(server.pid) - before[name] for name, server in watched.items()}
    client_cpu = sum(os.times()[:2]) - client_before
    expected = args.load_streams * args.load_tokens
    if streamed != expected:
        raise RuntimeError(f"cpu phase: {streamed} tokens streamed, expected {expected}")
    out = {
        "via": "router" if router is not None else "replica (no router: dry check)",
        "streams": args.load_streams,
        "tokens_per_stream": args.load_tokens,
        "tokens_streamed": streamed,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(streamed / wall, 1),
        "client_cpu_seconds": round(client_cpu, 3),
        "cpu_tick_seconds": 1.0 / CLOCK_TICKS,
    }
    for name in watched:
        out[f"{name}_cpu_seconds"] = round(used[name], 3)
        out[f"{name}_idle_cpu_per_second"] = round(idle_rate[name], 5)
        out[f"{name}_us_per_token"] = round(used[name] / streamed * 1e6, 2)
        out[f"{name}_us_per_token_net_of_idle"] = round(
            max(0.0, used[name] - idle_rate[name] * wall) / streamed * 1e6, 2)
    results["cpu"] = out


async def phase_streams(args, protos, router, worker, replica, results):
    """Through the router; without one (a dry check of the script), straight to the replica,
    with the worker's memory in the router's place."""
    generator = random.Random(3)
    held_by = router if router is not None else worker
    client_class = RouterClient if router is not None else ReplicaClient
    address = (router.addresses["grpc"] if router is not None
               else worker.addresses["listening"])
    rss_before = memory_kib(held_by.pid)
    # Several HTTP/2 connections, so no single connection's stream limit caps the test.
    clients = [client_class(protos, address, [("grpc.use_local_subchannel_pool", 1),
                                              ("grpc.channel_id", index)])
               for index in range(args.open_channels)]
    calls = []
    received = [0]
    ended = {"ok": 0, "cancelled": 0, "error": 0}
    errors = {}

    async def hold(call):
        try:
            async for chunk in call:
                received[0] += len(chunk.token_ids)
            ended["ok"] += 1
        except asyncio.CancelledError:
            ended["cancelled"] += 1
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                ended["cancelled"] += 1
            else:
                ended["error"] += 1
                key = f"{error.code().name}: {error.details()}"
                errors[key] = errors.get(key, 0) + 1

    open_start = time.perf_counter()
    tasks = []
    for index in range(args.open_streams):
        client = clients[index % len(clients)]
        call = client.generate(client.request(random_prompt(generator, args.prompt_tokens),
                                              args.open_max_tokens,
                                              request_id=f"open-{index}"))
        calls.append(call)
        tasks.append(asyncio.create_task(hold(call)))
        if index % 100 == 99:
            await asyncio.sleep(0)  # let the event loop send what is queued

    # Open means: the replica holds the request (running or waiting) and no call has ended.
    deadline = time.monotonic() + args.open_timeout
    report = None
    while time.monotonic() < deadline:
        report = await replica.load()
        if report.running_requests + report.waiting_requests >= args.open_streams:
            break
        if sum(ended.values()) and ended["error"]:
            break
        await asyncio.sleep(0.5)
    open_seconds = time.perf_counter() - open_start
    await asyncio.sleep(args.hold_seconds)
    report = await replica.load()
    memory = memory_kib(held_by.pid)
    gauges = router_gauges(router) if router is not None else {}
    held = {
        "via": "router" if router is not None else "replica (no router: dry check)",
        "requested": args.open_streams,
        "replica_running": report.running_requests,
        "replica_waiting": report.waiting_requests,
        "ended_before_cancel": dict(ended),
        "errors": dict(errors),
        "seconds_to_open": round(open_seconds, 2),
        "router_rss_before_mib": round(rss_before["VmRSS"] / 1024, 1),
        "router_rss_open_mib": round(memory["VmRSS"] / 1024, 1),
        "router_hwm_mib": round(memory["VmHWM"] / 1024, 1),
        "router_gauges": gauges,
        "tokens_received_while_open": received[0],
    }

    cancel_start = time.perf_counter()
    for call in calls:
        call.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    drained = None
    deadline = time.monotonic() + args.open_timeout
    while time.monotonic() < deadline:
        report = await replica.load()
        if report.running_requests == 0 and report.waiting_requests == 0:
            drained = time.perf_counter() - cancel_start
            break
        await asyncio.sleep(0.05)
    held.update({
        "replica_running_after_cancel": report.running_requests,
        "replica_waiting_after_cancel": report.waiting_requests,
        "seconds_to_zero_after_cancel": None if drained is None else round(drained, 3),
        "router_rss_after_cancel_mib": round(memory_kib(held_by.pid)["VmRSS"] / 1024, 1),
    })
    for client in clients:
        await client.close()
    results["streams"] = held


async def phase_prefix(args, client, results, path):
    # A seed per path: the second path must not find the first one's prefixes cached.
    generator = random.Random(f"prefix-{path}")
    miss, hit, cached = [], [], []
    for index in range(args.prefix_warmup + args.prefix_pairs):
        prefix = random_prompt(generator, args.prefix_tokens)
        times = []
        for kind in ("miss", "hit"):
            prompt = prefix + random_prompt(generator, args.suffix_tokens)
            request = client.request(prompt, 1, request_id=f"prefix-{path}-{index}-{kind}")
            start, arrivals, last = await timed_stream(client.generate(request, timeout=120))
            times.append(arrivals[0][0] - start)
            if kind == "hit" and last is not None and last.HasField("finish"):
                finish = last.finish
                cached.append(finish.usage.cached_prompt_tokens if hasattr(finish, "usage")
                              else finish.cached_prompt_tokens)
        if index >= args.prefix_warmup:
            miss.append(times[0])
            hit.append(times[1])
    miss_median, hit_median = statistics.median(miss), statistics.median(hit)
    results.setdefault("prefix", {})[path] = {
        "pairs": len(miss),
        "prefix_tokens": args.prefix_tokens,
        "suffix_tokens": args.suffix_tokens,
        "ttft_miss_median_ms": milliseconds(miss_median),
        "ttft_hit_median_ms": milliseconds(hit_median),
        "speedup": round(miss_median / hit_median, 2),
        "cached_prompt_tokens_on_hit": sorted(set(cached[args.prefix_warmup:])),
    }


def prefix_caching_flag(worker):
    """(flag with "off" value) for turning prefix caching off, from reflect-worker --helpfull;
    None when there is no such flag."""
    help_text = subprocess.run([str(worker), "--helpfull"], capture_output=True,
                               text=True).stdout + subprocess.run(
        [str(worker), "--helpfull"], capture_output=True, text=True).stderr
    for name in re.findall(r"--([a-z_]*prefix_cach[a-z_]*)", help_text):
        if name.startswith(("disable", "no_")):
            return f"--{name}=true"
        return f"--{name}=false"
    return None


async def nohit_run(args, protos, log_dir, extra_flags, prompts):
    worker = start_worker(args, log_dir, extra_flags)
    replica = ReplicaClient(protos, worker.addresses["listening"])
    try:
        await wait_replica_ready(replica)
        # Warm-up on prompts of the same length that the measured run never sees.
        generator = random.Random(99)
        await run_concurrent(replica, [random_prompt(generator, args.nohit_prompt_tokens)
                                       for _ in range(args.nohit_concurrency)],
                             args.nohit_max_tokens, args.nohit_concurrency, "nohit-warmup")
        start = time.perf_counter()
        streamed = await run_concurrent(replica, prompts, args.nohit_max_tokens,
                                        args.nohit_concurrency, "nohit")
        wall = time.perf_counter() - start
        return wall, streamed
    finally:
        await replica.close()
        worker.stop()


async def phase_nohit(args, protos, log_dir, results):
    flag = args.caching_off_flag or prefix_caching_flag(args.worker)
    if flag is None:
        results["nohit"] = {"measured": False,
                            "reason": "reflect-worker has no flag to turn prefix caching off"}
        return
    generator = random.Random(5)
    prompts = [random_prompt(generator, args.nohit_prompt_tokens)
               for _ in range(args.nohit_requests)]
    runs = {"on": [], "off": []}
    for round_index in range(args.rounds):
        order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
        for arm in order:
            wall, streamed = await nohit_run(args, protos, log_dir,
                                             [flag] if arm == "off" else [], prompts)
            runs[arm].append(wall)
            print(f"router_bench: nohit round {round_index} caching {arm}: {wall:.3f} s, "
                  f"{streamed} tokens", file=sys.stderr)
    prompt_total = args.nohit_requests * args.nohit_prompt_tokens
    generated_total = args.nohit_requests * args.nohit_max_tokens

    def rates(wall):
        return {"total_tokens_per_second": round((prompt_total + generated_total) / wall, 1),
                "generated_tokens_per_second": round(generated_total / wall, 1)}

    best_on, best_off = min(runs["on"]), min(runs["off"])
    results["nohit"] = {
        "measured": True,
        "off_flag": flag,
        "requests": args.nohit_requests,
        "prompt_tokens": args.nohit_prompt_tokens,
        "max_tokens": args.nohit_max_tokens,
        "concurrency": args.nohit_concurrency,
        "wall_seconds_on": [round(wall, 3) for wall in runs["on"]],
        "wall_seconds_off": [round(wall, 3) for wall in runs["off"]],
        "best_on": rates(best_on),
        "best_off": rates(best_off),
        # Same tokens in both arms, so the throughput ratio is the ratio of wall times.
        "throughput_change_pct_best": round((best_off / best_on - 1.0) * 100.0, 2),
        "throughput_change_pct_median": round(
            (statistics.median(runs["off"]) / statistics.median(runs["on"]) - 1.0) * 100.0, 2),
    }


# ---------------------------------------------------------------------------------------------
# Report

def fmt(value, unit=""):
    return "n/a" if value is None else f"{value}{unit}"


def markdown(results):
    rows = []
    overhead = results.get("overhead")
    if overhead:
        for arm in ("replica", "router"):
            if arm in overhead:
                o = overhead[arm]
                rows.append((f"TTFT p50 / p99, {arm}", f"{o['ttft_p50_ms']} / {o['ttft_p99_ms']} ms",
                             ""))
                rows.append((f"ITL p50 / p99, {arm}", f"{o['itl_p50_ms']} / {o['itl_p99_ms']} ms",
                             ""))
        if "added" in overhead:
            a = overhead["added"]
            rows.append(("router adds: TTFT p50 / p99", f"{a['ttft_p50_ms']} / {a['ttft_p99_ms']} ms",
                         "p99 ≤ +1 ms"))
            rows.append(("router adds: ITL p50 / p99", f"{a['itl_p50_ms']} / {a['itl_p99_ms']} ms",
                         ""))
    cpu = results.get("cpu")
    if cpu and "router_us_per_token" in cpu:
        rows.append((f"router CPU per streamed token ({cpu['streams']} streams × "
                     f"{cpu['tokens_per_stream']} tokens)",
                     f"{cpu['router_us_per_token']} µs gross, "
                     f"{cpu['router_us_per_token_net_of_idle']} µs net of idle", "≤ 5 µs"))
    streams = results.get("streams")
    if streams:
        held = streams["replica_running"] + streams["replica_waiting"]
        rows.append((f"open streams via {streams['via']} (requested {streams['requested']})",
                     f"{held} held, RSS {streams['router_rss_open_mib']} MiB "
                     f"(peak {streams['router_hwm_mib']} MiB)", "≥ 5,000 at ≤ 1 GiB"))
        rows.append(("after cancelling all: replica running / waiting",
                     f"{streams['replica_running_after_cancel']} / "
                     f"{streams['replica_waiting_after_cancel']} after "
                     f"{fmt(streams['seconds_to_zero_after_cancel'], ' s')}", "0"))
    for path, prefix in results.get("prefix", {}).items():
        rows.append((f"TTFT, {prefix['prefix_tokens']}-token prefix, miss / hit (via {path})",
                     f"{prefix['ttft_miss_median_ms']} / {prefix['ttft_hit_median_ms']} ms = "
                     f"{prefix['speedup']}×", "hit ≥ 5× lower"))
    nohit = results.get("nohit")
    if nohit:
        if nohit["measured"]:
            rows.append((f"no-hit workload, caching on vs off ({nohit['off_flag']}; "
                         f"total tokens/s, best of {len(nohit['wall_seconds_on'])})",
                         f"{nohit['best_on']['total_tokens_per_second']} vs "
                         f"{nohit['best_off']['total_tokens_per_second']}: on is "
                         f"{-nohit['throughput_change_pct_best']}% lower "
                         f"(median runs {-nohit['throughput_change_pct_median']}%)",
                         "≤ 2% lower"))
        else:
            rows.append(("no-hit workload, caching on vs off", f"not measured: {nohit['reason']}",
                         "≤ 2% lower"))
    lines = ["| measurement | result | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def machine():
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count()}


# ---------------------------------------------------------------------------------------------

async def run(args):
    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="router_bench-"))
    protos = Protos(args.build_dir / "proto" / "reflect.protoset")
    results = {"machine": machine(), "command": " ".join(sys.argv),
               "worker_threads": args.worker_threads, "model": str(args.model)}
    phases = set(args.phases.split(","))
    have_router = args.router.exists()
    if not have_router:
        print(f"router_bench: {args.router} not found: replica arms only", file=sys.stderr)
    results["router"] = have_router

    serving = phases & {"overhead", "cpu", "streams", "prefix"}
    worker = router = replica = router_client = None
    try:
        if serving:
            worker = start_worker(args, log_dir, [
                f"--max_num_seqs={args.max_num_seqs}",
                f"--max_waiting_requests={args.max_waiting_requests}"])
            replica = ReplicaClient(protos, worker.addresses["listening"])
            await wait_replica_ready(replica)
            if have_router:
                router = start_router(args, log_dir, worker.addresses["listening"], [
                    f"--max_queued_requests={args.max_queued_requests}",
                    f"--max_in_flight_requests={args.max_in_flight_requests}"])
                router_client = RouterClient(protos, router.addresses["grpc"])
        if "overhead" in phases:
            await phase_overhead(args, replica, router_client, results)
            print(f"router_bench: overhead {json.dumps(results['overhead'])}", file=sys.stderr)
        if "prefix" in phases:
            await phase_prefix(args, replica, results, "replica")
            if router_client is not None:
                await phase_prefix(args, router_client, results, "router")
            print(f"router_bench: prefix {json.dumps(results['prefix'])}", file=sys.stderr)
        if "cpu" in phases:
            await phase_cpu(args, router, router_client, worker, replica, results)
            print(f"router_bench: cpu {json.dumps(results['cpu'])}", file=sys.stderr)
        if "streams" in phases:
            await phase_streams(args, protos, router, worker, replica, results)
            print(f"router_bench: streams {json.dumps(results['streams'])}", file=sys.stderr)
    finally:
        if router_client is not None:
            await router_client.close()
        if replica is not None:
            await replica.close()
        for server in (router, worker):
            if server is not None:
                server.stop()
    if "nohit" in phases:
        await phase_nohit(args, protos, log_dir, results)
    results["logs"] = str(log_dir)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=pathlib.Path, default=pathlib.Path("build"))
    parser.add_argument("--model", type=pathlib.Path, default=pathlib.Path("models/tiny"),
                        help="made with `reflect mkmodel --preset tiny` when absent")
    parser.add_argument("--worker", type=pathlib.Path, help="default: BUILD/worker/reflect-worker")
    parser.add_argument("--router", type=pathlib.Path, help="default: BUILD/router/reflect-router")
    parser.add_argument("--phases", default="overhead,prefix,cpu,streams,nohit")
    parser.add_argument("--worker-threads", type=int, default=1,
                        help="engine threads; 1 leaves the other core to router and client")
    parser.add_argument("--worker-arg", action="append", default=[])
    parser.add_argument("--router-arg", action="append", default=[])
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-waiting-requests", type=int, default=10000)
    parser.add_argument("--max-queued-requests", type=int, default=10000)
    parser.add_argument("--max-in-flight-requests", type=int, default=20000)
    # overhead
    parser.add_argument("--requests", type=int, default=200, help="per arm, sequential")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    # cpu
    parser.add_argument("--load-streams", type=int, default=64)
    parser.add_argument("--load-tokens", type=int, default=256)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    # streams
    parser.add_argument("--open-streams", type=int, default=5000)
    parser.add_argument("--open-channels", type=int, default=50)
    parser.add_argument("--open-max-tokens", type=int, default=100000)
    parser.add_argument("--open-timeout", type=float, default=180.0)
    parser.add_argument("--hold-seconds", type=float, default=5.0)
    # prefix
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--suffix-tokens", type=int, default=16)
    parser.add_argument("--prefix-pairs", type=int, default=10)
    parser.add_argument("--prefix-warmup", type=int, default=2)
    # nohit
    parser.add_argument("--nohit-requests", type=int, default=256)
    parser.add_argument("--nohit-prompt-tokens", type=int, default=256)
    parser.add_argument("--nohit-max-tokens", type=int, default=32)
    parser.add_argument("--nohit-concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--caching-off-flag",
                        help="worker flag that turns prefix caching off; default: found in "
                             "reflect-worker --helpfull (a neutral flag here gives an A/A run, "
                             "the noise floor)")
    parser.add_argument("--json-out", type=pathlib.Path)
    args = parser.parse_args()
    args.worker = args.worker or args.build_dir / "worker" / "reflect-worker"
    args.router = args.router or args.build_dir / "router" / "reflect-router"
    if not args.worker.exists():
        sys.exit(f"router_bench: {args.worker} not found (build it first)")
    if not (args.model / "config.json").exists():
        reflect = args.build_dir / "tools" / "reflect" / "reflect"
        subprocess.run([str(reflect), "mkmodel", "--preset", "tiny", "--out", str(args.model)],
                       check=True)

    results = asyncio.run(run(args))
    print(markdown(results))
    line = json.dumps({"router_bench": results})
    print(line)
    if args.json_out:
        args.json_out.write_text(line + "\n")


if __name__ == "__main__":
    main()
