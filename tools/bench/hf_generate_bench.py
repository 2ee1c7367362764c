#!/usr/bin/env python3
"""Issue #5's workloads through Hugging Face transformers `generate`, to compare with reflect.

The same workloads as `reflect bench --backend cuda` (tools/reflect/cuda_bench.h), on the same
GPU, in bf16, over the `8b` preset's shape (tools/reflect/model_presets.cc; --config takes another
config.json) with random weights made on the device: no download, no checkpoint.

  batch1_decode        one 128-token random prompt, 129 greedy tokens: the median interval
                       between consecutive tokens (a streamer synchronizes and stamps each one).
  throughput           1000 in / 1000 out and 128 in / 128 out, greedy, every token generated
                       (min_new_tokens = max_new_tokens), one `generate` call over the largest batch
                       that fits, at most reflect's 256 and 512 requests: the batch is estimated
                       from free memory, then halved while generate runs out of memory.
  time_to_first_token  a 1000-token prompt, max_new_tokens 1: median of 10 after a warm-up.

Prints one JSON object per figure per line, as `reflect bench --json` does ({"figure": ...},
plus "engine": "transformers"); tools/gpu-check.sh takes the ratios. Workloads that would start
after --max-seconds are skipped (reported with "skipped"), to fit a GPU lease.

Usage: python3 tools/bench/hf_generate_bench.py [--device cuda] [--config config.json]
"""

import argparse
import functools
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

# The `8b` preset of tools/reflect/model_presets.cc (Llama-3.1-8B's shape).
PRESET_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}
DECODE_PROMPT_TOKENS = 128
DECODE_STEPS = 128
THROUGHPUT_WORKLOADS = ((1000, 1000, 256), (128, 128, 512))  # (in, out, most requests)
FIRST_TOKEN_PROMPT_TOKENS = 1000
FIRST_TOKEN_RUNS = 10
# Memory one sequence needs beyond its KV cache during generate, per prompt token and
# intermediate feature: the prefill's MLP gate, up and product rows in bf16, with slack.
ACTIVATION_BYTES_PER_FEATURE = 8


def emit(figure):
    figure["engine"] = "transformers"
    print(json.dumps(figure), flush=True)


class Clock:
    """Wall time, synchronizing the device first so that queued work is counted."""

    def __init__(self, device):
        self.device = device

    def now(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class TokenTimes(BaseStreamer):
    """Stamps every token generate streams (the first put is the prompt)."""

    def __init__(self, clock):
        self.clock = clock
        self.times = []

    def put(self, value):
        self.times.append(self.clock.now())

    def end(self):
        pass


def random_ids(batch, length, vocab, device):
    return torch.randint(0, vocab, (batch, length), device=device)


def generate(model, input_ids, new_tokens, streamer=None):
    return model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                          max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                          pad_token_id=0, streamer=streamer)


def kv_bytes_per_token(config):
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 2


def fitting_batch(config, device, in_tokens, out_tokens, most):
    """The largest batch (at most `most`) whose KV cache and prefill activations fit in 90% of
    the free memory."""
    if device.type != "cuda":
        return most
    free, _ = torch.cuda.mem_get_info(device)
    per_sequence = ((in_tokens + out_tokens) * kv_bytes_per_token(config) +
                    in_tokens * config.intermediate_size * ACTIVATION_BYTES_PER_FEATURE)
    return max(1, min(most, int(0.9 * free) // per_sequence))


def measure_decode(model, config, clock):
    device = model.device
    input_ids = random_ids(1, DECODE_PROMPT_TOKENS, config.vocab_size, device)
    generate(model, input_ids, 8)  # warm-up
    times = TokenTimes(clock)
    generate(model, input_ids, DECODE_STEPS + 1, streamer=times)
    token_times = times.times[1:]  # times[0]: the prompt, before the prefill
    seconds = statistics.median(b - a for a, b in zip(token_times, token_times[1:]))
    emit({"figure": "batch1_decode", "seconds_per_token": seconds,
          "prompt_tokens": DECODE_PROMPT_TOKENS, "steps": DECODE_STEPS})


def measure_throughput(model, config, clock, in_tokens, out_tokens, most):
    device = model.device
    batch = fitting_batch(config, device, in_tokens, out_tokens, most)
    while True:
        input_ids = random_ids(batch, in_tokens, config.vocab_size, device)
        try:
            start = clock.now()
            output = generate(model, input_ids, out_tokens)
            seconds = clock.now() - start
            break
        except torch.cuda.OutOfMemoryError:
            del input_ids
            torch.cuda.empty_cache()
            if batch == 1:
                raise
            batch //= 2
    generated = int(output.shape[0]) * (int(output.shape[1]) - in_tokens)
    emit({"figure": "throughput", "input_tokens": in_tokens, "output_tokens": out_tokens,
          "requests": batch, "generated_tokens": generated, "seconds": seconds,
          "tokens_per_second": generated / seconds})
    del output
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_first_token(model, config, clock):
    device = model.device
    seconds = []
    for run in range(FIRST_TOKEN_RUNS + 1):  # run 0 is the warm-up
        input_ids = random_ids(1, FIRST_TOKEN_PROMPT_TOKENS, config.vocab_size, device)
        start = clock.now()
        generate(model, input_ids, 1)
        if run > 0:
            seconds.append(clock.now() - start)
    emit({"figure": "time_to_first_token", "seconds": statistics.median(seconds),
          "prompt_tokens": FIRST_TOKEN_PROMPT_TOKENS, "runs": FIRST_TOKEN_RUNS})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default=None,
                        help="a config.json to use instead of the 8b preset's shape")
    parser.add_argument("--max-seconds", type=float, default=480.0,
                        help="start no workload after this many seconds")
    arguments = parser.parse_args()

    device = torch.device(arguments.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("hf_generate_bench: torch sees no CUDA device")
    if arguments.config:
        with open(arguments.config, encoding="utf-8") as file:
            config = LlamaConfig(**json.load(file))
    else:
        config = LlamaConfig(**PRESET_8B)
    started = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with device:
        model = LlamaForCausalLM(config)  # random weights, made on the device
    torch.set_default_dtype(torch.float32)
    model.eval()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit({"figure": "setup", "device": device_name, "parameters": parameters,
          "num_hidden_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
          "torch": torch.__version__, "transformers": transformers.__version__,
          "model_seconds": time.perf_counter() - started})

    clock = Clock(device)
    workloads = [("batch1_decode", functools.partial(measure_decode, model, config, clock))]
    for in_tokens, out_tokens, most in THROUGHPUT_WORKLOADS:
        workloads.append((f"throughput {in_tokens}/{out_tokens}",
                          functools.partial(measure_throughput, model, config, clock, in_tokens,
                                            out_tokens, most)))
    workloads.append(("time_to_first_token",
                      functools.partial(measure_first_token, model, config, clock)))
    with torch.inference_mode():
        for name, workload in workloads:
            if time.perf_counter() - started > arguments.max_seconds:
                emit({"figure": "skipped", "workload": name,
                      "reason": f"past --max-seconds {arguments.max_seconds:.0f}"})
                continue
            workload()

if __name__ == "__main__":
    main()
