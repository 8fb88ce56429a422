#!/usr/bin/env python3
"""PyTorch helpers for scripts/gpu-smoke: the peer, the loads and the numbers around `gpubench serve`.

Subcommands:
  params     weights of an architecture and the bytes one decode step reads (no torch needed)
  matmul     a known GPU load: a bf16 matmul loop for N seconds (prints TFLOP/s)
  bandwidth  device memory bandwidth from a tensor copy (bytes read + written per second)
  generate   transformers `generate` on the architecture with random weights: tok/s and TTFT at each batch
  summarize  reads a gpu-smoke results folder and prints (and writes) the summary table

The architecture shapes mirror `gpubench serve --load-format dummy --arch NAME`.
"""
import argparse
import json
import os
import statistics
import sys
import time

# name: (hidden, intermediate, layers, heads, kv_heads, vocab, tied embeddings, rope_theta)
ARCHS = {
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, True, 100000.0),
    "llama-3.2-1b": (2048, 8192, 16, 32, 8, 128256, True, 500000.0),
    "llama-3.2-3b": (3072, 8192, 28, 24, 8, 128256, True, 500000.0),
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256, False, 500000.0),
    # A tiny shape for tests on a CPU.
    "tiny": (64, 128, 2, 4, 2, 256, True, 10000.0),
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def fail(msg, code=1):
    print(f"torch-peer: error: {msg}", file=sys.stderr)
    sys.exit(code)


def arch_params(name):
    """Parameter counts: total, and those one decode step reads (every layer, the final norm, the output layer)."""
    h, i, layers, heads, kv, vocab, tied, _ = ARCHS[name]
    head_dim = h // heads
    q, kvd = heads * head_dim, kv * head_dim
    per_layer = h * q + 2 * h * kvd + q * h + 3 * h * i + 2 * h
    embed = vocab * h
    total = embed + layers * per_layer + h + (0 if tied else vocab * h)
    # The embedding lookup reads one row per token; the output layer reads the whole [vocab, hidden] matrix.
    per_step = layers * per_layer + h + vocab * h
    return {"arch": name, "params": total, "params_read_per_step": per_step}


def cmd_params(a):
    p = arch_params(a.arch)
    p["weight_bytes"] = a.weight_bytes
    p["bytes_per_step"] = p["params_read_per_step"] * a.weight_bytes
    print(json.dumps(p))


def need_torch(device):
    try:
        import torch  # noqa: F401
    except ImportError:
        fail("PyTorch is not installed for this python3 (pip install torch)")
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("torch sees no CUDA device (torch.cuda.is_available() is False); use --device cpu")
    return torch


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cmd_matmul(a):
    torch = need_torch(a.device)
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    n = a.size
    x = torch.randn(n, n, device=a.device, dtype=dtype)
    y = torch.randn(n, n, device=a.device, dtype=dtype)
    end = time.time() + a.seconds
    count, start = 0, time.perf_counter()
    while time.time() < end:
        for _ in range(10):
            x @ y
        sync(torch, a.device)
        count += 10
    wall = time.perf_counter() - start
    print(json.dumps({"load": "matmul", "device": a.device, "dtype": str(dtype).replace("torch.", ""), "size": n,
                      "matmuls": count, "seconds": round(wall, 3), "tflops": round(2 * n ** 3 * count / wall / 1e12, 2)}))


def cmd_bandwidth(a):
    torch = need_torch(a.device)
    numel = a.mib * 1024 * 1024 // 4
    src = torch.empty(numel, dtype=torch.float32, device=a.device).fill_(1.0)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(torch, a.device)
    times = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(torch, a.device)
        times.append(time.perf_counter() - t0)
    best = min(times)
    moved = 2 * numel * 4
    print(json.dumps({"device": a.device, "bytes_per_copy": numel * 4, "best_s": best, "median_s": statistics.median(times),
                      "gb_per_s": round(moved / best / 1e9, 1), "definition": "bytes read + written per second, best of repeats"}))


def cmd_generate(a):
    torch = need_torch(a.device)
    try:
        import transformers
        from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    except ImportError:
        fail("transformers is not installed for this python3 (pip install transformers)")
    h, i, layers, heads, kv, vocab, tied, theta = ARCHS[a.arch]
    cfg = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=tied, rope_theta=theta,
                      max_position_embeddings=8192, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(a.device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    build_s = time.perf_counter() - t0
    results = []
    for batch in a.batch:
        ids = torch.randint(3, vocab, (batch, a.prompt_tokens), device=a.device)
        mask = torch.ones_like(ids)

        def run(new_tokens):
            sync(torch, a.device)
            start = time.perf_counter()
            # Greedy, no end-of-sequence token: every sequence makes exactly new_tokens tokens.
            gc = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)
            sync(torch, a.device)
            return time.perf_counter() - start, out.shape[1] - a.prompt_tokens

        run(2)  # warm-up
        ttft = statistics.median(run(1)[0] for _ in range(3))
        wall, made = run(a.new_tokens)
        results.append({
            "batch": batch,
            "prompt_tokens": a.prompt_tokens,
            "new_tokens": made,
            "ttft_ms": round(ttft * 1e3, 2),
            "wall_s": round(wall, 3),
            "output_tok_s": round(batch * made / wall, 1),
            "decode_tok_s_per_seq": round((made - 1) / (wall - ttft), 1) if made > 1 and wall > ttft else None,
        })
        print(f"batch {batch}: {results[-1]['output_tok_s']} tok/s, TTFT {results[-1]['ttft_ms']} ms", file=sys.stderr)
    out = {"peer": "transformers generate", "arch": a.arch, "dtype": a.dtype, "device": a.device,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "params": sum(p.numel() for p in model.parameters()), "build_s": round(build_s, 2), "results": results}
    print(json.dumps(out))


# ------------------------------------------------------------------------------------------------------------
def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def last_json_line(path):
    """The last line of a log file that parses as a JSON object."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def serve_rows(report):
    """Per concurrency: output tok/s, TTFT p50, TPOT p50 from a load-test sweep file."""
    rows = {}
    for run in (report or {}).get("runs", []):
        c = (run.get("workload") or {}).get("concurrency")
        lat = run.get("latency_ms") or {}
        rows[c] = {
            "ok": (run.get("counts") or {}).get("ok"),
            "tok_s": (run.get("throughput") or {}).get("output_tokens_per_s"),
            "ttft_p50": (lat.get("ttft") or {}).get("p50"),
            "tpot_p50": (lat.get("tpot") or {}).get("p50"),
        }
    return rows


def first_error(path):
    """The first `error:` line of a log, shortened; None when there is none."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("error:"):
                    return line.strip()[:140]
    except OSError:
        pass
    return None


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def cmd_summarize(a):
    out = a.folder
    lines, summary = [], {}
    steps = []
    try:
        with open(os.path.join(out, "steps.tsv")) as f:
            steps = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        pass
    summary["steps"] = [{"step": s[0], "status": s[1], "seconds": s[2] if len(s) > 2 else None} for s in steps]

    selftest = []
    try:
        with open(os.path.join(out, "self-test.jsonl")) as f:
            selftest = [json.loads(line) for line in f if line.strip().startswith("{")]
    except (OSError, ValueError):
        pass
    passed = sum(1 for s in selftest if s.get("passed"))
    summary["self_test"] = {"passed": passed, "checks": len(selftest)}

    bw = last_json_line(os.path.join(out, "bandwidth.log"))
    bw_gbs = bw.get("gb_per_s") if bw else None
    summary["bandwidth_gb_s"] = bw_gbs
    load = last_json_line(os.path.join(out, "nvml-load.log"))
    summary["matmul_tflops"] = load.get("tflops") if load else None

    rows = []
    failed_checks = [s.get("check", "?") for s in selftest if not s.get("passed")]
    rows.append(("self-test", f"{passed}/{len(selftest)} checks passed"
                 + (f"; failed: {', '.join(failed_checks)}" if failed_checks else "") if selftest
                 else first_error(os.path.join(out, "self-test.log")) or "not run"))
    rows.append(("device copy bandwidth", f"{fmt(bw_gbs)} GB/s (read+write)" if bw_gbs else "not measured"))
    if summary["matmul_tflops"] is not None:
        rows.append(("matmul load (torch)", f"{fmt(summary['matmul_tflops'])} TFLOP/s"))

    for name in ("dummy", "gguf"):
        rep = load_json(os.path.join(out, f"serve-{name}.json"))
        if rep is None:
            rows.append((f"serve {name}", first_error(os.path.join(out, f"serve-{name}.server.log"))
                         or "not measured (see steps)"))
            continue
        r = serve_rows(rep)
        summary[f"serve_{name}"] = r
        for c in sorted(k for k in r if k is not None):
            v = r[c]
            rows.append((f"serve {name} c={c}", f"{fmt(v['tok_s'])} tok/s, TTFT p50 {fmt(v['ttft_p50'])} ms, "
                                                f"TPOT p50 {fmt(v['tpot_p50'], 2)} ms, {v['ok']} ok"))
        if name == "dummy" and 1 in r and r[1]["tpot_p50"]:
            decode = 1000.0 / r[1]["tpot_p50"]
            summary["dummy_batch1_decode_tok_s"] = decode
            p = arch_params(a.arch)
            step_bytes = p["params_read_per_step"] * a.weight_bytes
            summary["bytes_per_step"] = step_bytes
            rows.append(("batch-1 decode (1/TPOT)", f"{fmt(decode)} tok/s"))
            if bw_gbs:
                bound = bw_gbs * 1e9 / step_bytes
                summary["bound_tok_s"] = bound
                summary["fraction_of_bound"] = decode / bound
                rows.append(("bandwidth bound", f"{step_bytes / 1e9:.2f} GB/step ({a.weight_bytes} B/weight) / "
                                                f"{fmt(bw_gbs)} GB/s = {fmt(bound)} tok/s; decode reaches "
                                                f"{100 * decode / bound:.0f}%"))

    for dtype in ("float32", "bfloat16"):
        peer = last_json_line(os.path.join(out, f"peer-{dtype}.log"))
        if not peer:
            rows.append((f"transformers {dtype}", "not measured (see steps)"))
            continue
        summary[f"peer_{dtype}"] = peer
        for r in peer.get("results", []):
            rows.append((f"transformers {dtype} b={r['batch']}", f"{fmt(r['output_tok_s'])} tok/s, TTFT {fmt(r['ttft_ms'])} ms"))

    share = []
    try:
        with open(os.path.join(out, "share-memory.tsv")) as f:
            share = [dict(zip(("phase", "server", "pid", "used_mib", "share_mib", "used_of_share", "within_share"),
                              line.rstrip("\n").split("\t"))) for line in f.readlines()[1:] if line.strip()]
    except OSError:
        pass
    kv = {}
    try:
        with open(os.path.join(out, "share-kv.txt")) as f:
            for k, line in enumerate(f, 1):
                if "KV cache " in line:
                    kv[str(k)] = line.split("KV cache ", 1)[1].split(",")[0]
    except OSError:
        pass
    if share:
        summary["share"] = share
        last = {}
        for r in share:
            last[r["server"]] = r  # after-load comes after loaded
        for k in sorted(last, key=int):
            r = last[k]
            pct = f"{100 * float(r['used_of_share']):.0f}%" if r["used_of_share"] not in ("-", "") else "-"
            rows.append((f"share server {k} ({r['phase']})", f"{r['used_mib']} MiB of its {r['share_mib']} MiB share ({pct}, "
                                                            f"within: {r['within_share']}); KV cache {kv.get(k, '-')}"))
    else:
        rows.append(("share (3 servers)", "not measured (see steps)"))
    bench = [s for s in steps if s and s[0] == "bench"]
    if bench:
        rows.append(("bench --quick", f"{bench[0][1] if len(bench[0]) > 1 else '?'}; see bench/"))

    failed = [s for s in steps if len(s) > 1 and s[1] not in ("ok", "skipped")]
    rows.append(("steps", f"{len(steps) - len(failed)}/{len(steps)} ok or skipped"
                          + (f"; failed: {', '.join(s[0] + ' (' + s[1] + ')' for s in failed)}" if failed else "")))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        lines.append(f"{k.ljust(width)}  {v}")
    text = "\n".join(lines)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(text)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="torch-peer.py", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("params", help="weights and bytes read per decode step")
    p.add_argument("--arch", choices=sorted(ARCHS), default="llama-3.2-1b")
    p.add_argument("--weight-bytes", type=int, default=4, help="bytes per weight (4: f32, 2: bf16)")
    p.set_defaults(fn=cmd_params)

    p = sub.add_parser("matmul", help="a matmul loop as a known GPU load")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", type=int, default=8192)
    p.set_defaults(fn=cmd_matmul)

    p = sub.add_parser("bandwidth", help="device memory bandwidth from a tensor copy")
    p.add_argument("--device", default="cuda")
    p.add_argument("--mib", type=int, default=1024, help="size of the copied tensor in MiB")
    p.add_argument("--repeat", type=int, default=20)
    p.set_defaults(fn=cmd_bandwidth)

    p = sub.add_parser("generate", help="transformers generate with random weights")
    p.add_argument("--arch", choices=sorted(ARCHS), default="llama-3.2-1b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bfloat16")
    p.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64], help="e.g. 1,64")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("summarize", help="the summary table of a gpu-smoke results folder")
    p.add_argument("folder")
    p.add_argument("--arch", choices=sorted(ARCHS), default="llama-3.2-1b")
    p.add_argument("--weight-bytes", type=int, default=4, help="bytes per weight of the served dummy model")
    p.set_defaults(fn=cmd_summarize)

    a = ap.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
