#!/usr/bin/env python3
"""Side-by-side CPU benchmark: reflect vs llama.cpp on the same weights and cores.

Usage: tools/bench/compare_llamacpp.py --reflect build/tools/reflect/reflect --model models/1b
       [--prompt-tokens 128] [--decode-tokens 32] [--rounds 2]

Needs llama-cpp-python, gguf and sentencepiece from PyPI (`make bench-llamacpp` installs them). The model
directory is converted to GGUF once, with llama.cpp's own converter (convert_hf_to_gguf.py, taken
from the llama-cpp-python source distribution), keeping the checkpoint's dtype (bf16 or f32).
Both engines run alternately, `--rounds` times each, with the same thread count, the same prompt
length and the same number of decoded tokens; the best round of each is compared.
"""
import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tarfile
import tempfile
import time


def find_converter(cache_dir: pathlib.Path) -> pathlib.Path:
    """Extracts convert_hf_to_gguf.py, its conversion/ package and the gguf-py it was written
    with from the llama-cpp-python sdist (cached in cache_dir)."""
    script = cache_dir / "convert_hf_to_gguf.py"
    if script.exists():
        return script
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", "-d", download_dir, "llama-cpp-python"],
                       check=True)
        archive = next(pathlib.Path(download_dir).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                _, found, relative = member.name.partition("vendor/llama.cpp/")
                if found and (relative == script.name or
                              relative.startswith(("gguf-py/", "conversion/"))):
                    member.name = relative
                    tar.extract(member, cache_dir)
    if not script.exists():
        sys.exit("convert_hf_to_gguf.py not found in the llama-cpp-python sdist")
    return script


def ensure_gguf(model_dir: pathlib.Path) -> pathlib.Path:
    config = json.loads((model_dir / "config.json").read_text())
    outtype = {"bfloat16": "bf16", "float16": "f16"}.get(config.get("torch_dtype"), "f32")
    gguf_path = model_dir / f"model-{outtype}.gguf"
    if not gguf_path.exists():
        converter = find_converter(model_dir.parent / ".llamacpp-converter")
        environment = dict(os.environ, PYTHONPATH=str(converter.parent / "gguf-py"))
        subprocess.run([sys.executable, str(converter), str(model_dir), "--outtype", outtype,
                        "--outfile", str(gguf_path)], check=True, env=environment)
    return gguf_path


def bench_reflect(reflect: str, model_dir: pathlib.Path, prompt_tokens: int,
                  decode_tokens: int, threads: int) -> dict:
    output = subprocess.run(
        [reflect, "bench", "--model", str(model_dir), "--batch-sizes", "1",
         "--prompt-tokens", str(prompt_tokens), "--decode-tokens", str(decode_tokens),
         "--threads", str(threads), "--json"],
        check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    decode = next(row for row in result["decode"] if row["batch_size"] == 1)
    return {"prefill_tokens_per_second": result["prefill_tokens_per_second"],
            "decode_tokens_per_second": decode["tokens_per_second"]}


def bench_llamacpp(gguf_path: pathlib.Path, prompt_tokens: int, decode_tokens: int,
                   threads: int) -> dict:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=prompt_tokens + decode_tokens + 8,
                          n_batch=max(prompt_tokens, 8), n_ubatch=max(prompt_tokens, 8),
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    rng = random.Random(1234)
    prompt = [rng.randrange(1000, 100000) for _ in range(prompt_tokens)]
    llm.eval(prompt[:8])  # warm-up
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prefill_seconds = time.perf_counter() - start
    token = prompt[-1]
    start = time.perf_counter()
    for _ in range(decode_tokens):
        llm.eval([token])
        token = (token * 7 + 13) % 100000 + 1000
    decode_seconds = time.perf_counter() - start
    return {"prefill_tokens_per_second": prompt_tokens / prefill_seconds,
            "decode_tokens_per_second": decode_tokens / decode_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reflect", required=True)
    parser.add_argument("--model", required=True, type=pathlib.Path)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    gguf_path = ensure_gguf(args.model)
    best = {"reflect": {}, "llama.cpp": {}}
    for _ in range(args.rounds):
        for name, run in (("reflect", lambda: bench_reflect(args.reflect, args.model,
                                                            args.prompt_tokens,
                                                            args.decode_tokens, args.threads)),
                          ("llama.cpp", lambda: bench_llamacpp(gguf_path, args.prompt_tokens,
                                                               args.decode_tokens,
                                                               args.threads))):
            result = run()
            for key, value in result.items():
                best[name][key] = max(best[name].get(key, 0.0), value)
    print(f"model {args.model}  threads {args.threads}  prompt {args.prompt_tokens}  "
          f"decode {args.decode_tokens}  rounds {args.rounds} (best of)")
    print(f"{'':24}{'reflect':>12}{'llama.cpp':>12}{'ratio':>8}")
    for key, label in (("prefill_tokens_per_second", "prefill tokens/s"),
                       ("decode_tokens_per_second", "decode b=1 tokens/s")):
        ours, theirs = best["reflect"][key], best["llama.cpp"][key]
        print(f"{label:24}{ours:12.2f}{theirs:12.2f}{ours / theirs:8.2f}")
    print(json.dumps(best))


if __name__ == "__main__":
    main()
