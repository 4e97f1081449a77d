"""Train-step throughput: our jitted JAX step vs a transformers PyTorch step, same model and batch.

    python benchmarks/train_throughput.py [--hidden 256 --layers 4 --seq 256 --batch 8 --steps 4]

Both sides: a LLaMA of the same config (float32 on CPU), the same random token batch, next-token
cross entropy, AdamW (same lr / betas / weight decay), gradient clipping at 1.0. Ours is
rolellm_jax.train_step.TrainProgram (the step `python -m rolellm_jax.train` runs) on a one-device
mesh; PyTorch is LlamaForCausalLM + torch.optim.AdamW in eager mode.

Each framework runs in its own worker process, as it would for a user: in one shared process the
two runtimes' thread pools and malloc arenas meet, which no real run has. The workers take turns
(rounds of a few steps each, while the other waits idle on its pipe) so that a machine whose speed
drifts treats them alike. Reports tokens/s (median of the timed steps) and, on an accelerator
with a known peak, MFU.

``--glibc-thp on`` starts both workers with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, the setting
the README recommends for CPU runs (and ``python -m rolellm_jax.train`` turns on by itself): glibc
then backs its large blocks with transparent huge pages, which spares XLA most of the page faults of
its per-step temporaries. PyTorch may gain or lose by it (on a Zen 4 EPYC its fp32 LoRA step lost
~20%), so ``--glibc-thp both`` runs each framework with and without it, four workers in turns, and
sets each side at its better setting against the other's. The default, ``off``, leaves the
environment as it is.

MFU of a ~1B LLaMA (0.94B params) at 2048 tokens in bf16 on one GPU (issue 3's GPU target):

    python benchmarks/train_throughput.py --hidden 2048 --layers 16 --heads 16 --vocab 32000 \
        --seq 2048 --batch 8 --dtype bfloat16 --attention cudnn --remat none --skip-torch

(benchmarks/gpu_check.sh runs it, with the GPU training smoke test, on a machine with no network.)

LoRA on the real SmolLM2-135M shape (30 layers, hidden 576, 9 / 3 heads, vocabulary 49152, tied
head; random weights), ours vs transformers + PEFT LoRA with the same rank, alpha, targets, batch,
sequence length and AdamW over the adapters only (issue 17), fp32 and then bf16 compute (ours:
fp32 master weights, bf16 matmuls; PyTorch: the same model under ``torch.autocast(bfloat16)``,
what a PyTorch user turns on for bf16 mixed precision):

    python benchmarks/train_throughput.py --smollm2 --lora-rank 16 --batch 4 --remat none [--dtype bfloat16]

PEFT is a benchmark-only dependency: ``pip install peft``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from hostinfo import cpu_line, load_line  # noqa: E402  (benchmarks/ is this script's folder)
from smollm2_workload import SMOLLM2_135M  # noqa: E402

from rolellm_jax.models.config import ModelConfig  # noqa: E402
from rolellm_jax.training import glibc_thp  # noqa: E402


def jax_stepper(cfg: ModelConfig, batch: dict, lora: dict | None = None) -> tuple[Callable[[], float], Any]:
    """One call = one train step of ours (run to completion); returns its loss. Also gives the
    TrainProgram (its model FLOPs per token as the train CLI counts them, the model config it resolved)."""
    import jax

    from rolellm_jax.parallel.sharding import MeshConfig, make_mesh
    from rolellm_jax.training.config import LoraConfig, TrainConfig
    from rolellm_jax.training.train_step import TrainProgram

    train = TrainConfig(
        steps=1000,
        global_batch_size=batch["input_ids"].shape[0],
        lr=1e-4,
        warmup_steps=0,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    lora_cfg = LoraConfig(enabled=True, **lora) if lora else LoraConfig()
    program = TrainProgram.create(cfg, mesh, train, lora_cfg, batch["input_ids"].shape[1])
    holder = list(program.init_state(program.init_params(0), 0))
    arrays = {k: jax.device_put(v, program.batch_sharding) for k, v in batch.items()}
    step = program.jitted_step()

    def run() -> float:
        holder[0], metrics = step(holder[0], holder[1], arrays)
        return float(jax.block_until_ready(metrics["loss"]))

    return run, program


def torch_stepper(cfg: ModelConfig, batch: dict, lora: dict | None = None) -> Callable[[], float]:
    """One call = one eager transformers PyTorch train step (PEFT LoRA adapters when ``lora``; under
    bf16 autocast when ``cfg.dtype`` is bfloat16); returns its loss."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaConfig(
        **{k: v for k, v in cfg.to_hf_config().items() if k not in ("architectures", "model_type", "torch_dtype")}
    )
    hf._attn_implementation = "sdpa"
    model = LlamaForCausalLM(hf).train()
    if lora:
        import peft

        peft_cfg = peft.LoraConfig(
            r=lora["rank"], lora_alpha=lora["alpha"], target_modules=lora["targets"], lora_dropout=0.0
        )
        model = peft.get_peft_model(model, peft_cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ids = torch.from_numpy(batch["input_ids"]).long()
    targets = torch.from_numpy(batch["targets"]).long()
    mask = torch.from_numpy(batch["loss_mask"])

    def run() -> float:
        with autocast:
            logits = model(input_ids=ids).logits.float()
            ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            loss = (ce * mask.flatten()).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return float(loss.detach())

    return run


def jax_worker(conn: Connection, cfg: ModelConfig, remats: list[str], batch: dict, lora: dict | None) -> None:
    """Process serving ``(name, n)`` requests for our step under each remat policy; first sends what
    the report needs (versions, device, FLOPs per token, peak)."""
    import jax

    from rolellm_jax.training.flops import peak_flops_per_device

    steppers, program = {}, None
    for remat in remats:
        steppers[f"remat {remat}"], program = jax_stepper(cfg.replace(remat_policy=remat), batch, lora)
    resolved = program.model_cfg  # on a CPU, 16-bit compute trains unrolled (train_step.TrainProgram.create)
    device = jax.devices()[0]
    conn.send(
        {
            "label": f"rolellm_jax (jax {jax.__version__}, {cfg.dtype}{', LoRA' if lora else ''}, "
            f"{'scanned' if resolved.scan_layers else 'unrolled'} layers",
            "device": f"{device.device_kind} ({jax.device_count()} jax device(s))",
            "flops_per_token": program.flops_per_token(),
            "peak": peak_flops_per_device(device),
        }
    )
    serve(conn, steppers)


def torch_worker(conn: Connection, cfg: ModelConfig, batch: dict, lora: dict | None) -> None:
    import torch

    run = torch_stepper(cfg, batch, lora)
    precision = "bf16 autocast" if cfg.dtype == "bfloat16" else "float32"
    adapters = ", PEFT LoRA" if lora else ""
    conn.send(
        {
            "label": f"transformers PyTorch (torch {torch.__version__}, {precision}{adapters}, "
            f"{torch.get_num_threads()} threads"
        }
    )
    serve(conn, {"torch": run})


def serve(conn: Connection, steppers: dict[str, Callable[[], float]]) -> None:
    """Run ``n`` steps of a named stepper per ``(name, n)`` request; reply with their seconds and
    the last loss. ``None`` ends it."""
    while (request := conn.recv()) is not None:
        name, n = request
        seconds, loss = [], float("nan")
        for _ in range(n):
            t0 = time.perf_counter()
            loss = steppers[name]()
            seconds.append(time.perf_counter() - t0)
        conn.send((seconds, loss))


def interleaved_seconds(
    run: Callable[[str, int], list[float]], names: list[str], rounds: int, steps: int
) -> dict[str, list[float]]:
    """Per contender, the times of ``rounds x steps`` steps taken in turns: each round runs every
    contender for one untimed step (its threads and caches wake up) and ``steps`` timed ones, so
    that drift in the machine's speed (shared cores) hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            run(name, 1)
            times[name] += run(name, steps)
    return times


def _ask(conn: Connection, kind: str, request: tuple | None = None):
    """Send ``request`` (if any) to a worker and return its reply; a dead worker ends the run in one line."""
    try:
        if request is not None:
            conn.send(request)
        return conn.recv()
    except (EOFError, OSError):  # EOF: it died before replying; BrokenPipe: before we asked
        raise SystemExit(f"the {kind} worker died (its traceback is above); no figures") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no GQA)")
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M's shape (overrides the shape flags)")
    parser.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: full)")
    parser.add_argument("--lora-alpha", type=float, default=32.0)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds in which every contender runs its steps in turn")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="compute dtype of our model (bfloat16 on accelerators)")
    parser.add_argument(
        "--remat",
        default="none,dots_with_no_batch_dims_saveable",
        help="comma-separated remat policies to time ours with (a runtime setting, same model)",
    )
    parser.add_argument(
        "--attention",
        default="xla",
        choices=("xla", "cudnn", "splash"),
        help="attention_impl of our model: xla | cudnn (GPU, bf16) | splash (TPU)",
    )
    parser.add_argument(
        "--unrolled",
        action="store_true",
        help="our layers as a Python loop instead of one scan (no stacked residual buffers)",
    )
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument(
        "--glibc-thp",
        choices=("on", "off", "both"),
        default="off",
        help="start the workers with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc >= 2.35); both: each "
        "framework once with and once without, each side compared at its better setting",
    )
    args = parser.parse_args()
    if args.lora_rank and not args.skip_torch and importlib.util.find_spec("peft") is None:
        parser.error("--lora-rank compares with transformers + PEFT: pip install peft (or pass --skip-torch)")
    hugetlb = {"off": [None], "on": [True], "both": [False, True]}[args.glibc_thp]  # None: as the environment has it
    shape = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 8 / 3) // 8 * 8,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads,
    )
    if args.smollm2:
        shape = SMOLLM2_135M
        args.hidden, args.layers, args.heads, args.vocab = 576, 30, 9, 49152
    lora = None
    if args.lora_rank:
        lora = {"rank": args.lora_rank, "alpha": args.lora_alpha, "targets": args.lora_targets.split(",")}
    cfg = ModelConfig(
        family="llama",
        **shape,
        max_position_embeddings=args.seq,
        param_dtype="float32",
        dtype=args.dtype,
        scan_layers=not args.unrolled,
        attention_impl=args.attention,
        bos_token_id=1,
        eos_token_id=2,
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(3, args.vocab, (args.batch, args.seq + 1), dtype=np.int32)
    batch = {
        "input_ids": ids[:, :-1],
        "targets": ids[:, 1:],
        "loss_mask": np.ones((args.batch, args.seq), np.float32),
        "segment_ids": np.ones((args.batch, args.seq), np.int32),
        "positions": np.broadcast_to(np.arange(args.seq, dtype=np.int32), (args.batch, args.seq)).copy(),
    }
    remats = args.remat.split(",")
    # one worker per framework and huge-page setting: (framework, hugetlb) -> (target, args)
    workers = {("jax", on): (jax_worker, (cfg, remats, batch, lora)) for on in hugetlb}
    if not args.skip_torch:
        workers |= {("torch", on): (torch_worker, (cfg, batch, lora)) for on in hugetlb}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per framework, no fork of threads
    conns, infos, processes, environments = {}, {}, [], {}
    for key, (target, worker_args) in workers.items():
        parent, child = context.Pipe()
        process = context.Process(target=target, args=(child, *worker_args), daemon=True)
        with glibc_tunables(key[1]) as environments[key]:  # glibc reads it when the worker starts
            process.start()
        child.close()  # only the worker holds its end: a worker that dies ends our recv() with EOFError
        conns[key], infos[key] = parent, _ask(parent, key[0])
        processes.append(process)

    def tag(on: bool) -> str:  # the contenders' names say the setting when both are run
        return (", hugetlb=1" if on else ", no hugetlb tunable") if len(hugetlb) > 1 else ""

    # contender -> (its worker's key, the worker's stepper name)
    owner = {f"remat {remat}{tag(on)}": (("jax", on), f"remat {remat}") for on in hugetlb for remat in remats}
    if not args.skip_torch:
        owner |= {f"torch{tag(on)}": (("torch", on), "torch") for on in hugetlb}
    losses: dict[str, float] = {}  # the last loss each contender reported

    def run(name: str, n: int) -> list[float]:
        (framework, on), stepper = owner[name]
        seconds, losses[name] = _ask(conns[framework, on], framework, (stepper, n))
        return seconds

    tunables = "; ".join(sorted({f"{v!r}" for v in environments.values()}))
    print(
        f"device: {infos[('jax', hugetlb[0])]['device']}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus; date {time.strftime('%Y-%m-%d', time.gmtime())}; workers' GLIBC_TUNABLES={tunables}"
    )
    print(
        f"model: llama hidden {args.hidden}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}"
        f"{', tied head (SmolLM2-135M shape)' if args.smollm2 else ''}; "
        f"{f'LoRA r{args.lora_rank} alpha {args.lora_alpha:g} on {args.lora_targets}' if lora else 'full fine-tune'}; "
        f"batch {args.batch} x {args.seq} tokens; AdamW; {args.warmup} warm-up steps, then {args.rounds} rounds "
        f"of {args.steps} timed steps each, taken in turns by one process per framework"
        f"{' and huge-page setting' if len(hugetlb) > 1 else ''}"
    )
    print(cpu_line())
    for name in owner:
        run(name, args.warmup)  # compile / warm up
    warm_losses = dict(losses)
    print(load_line("before the timed rounds"))
    times = interleaved_seconds(run, list(owner), args.rounds, args.steps)
    print(load_line("after them"))
    for conn in conns.values():
        conn.send(None)
    for process in processes:
        process.join()
    rates = {name: batch["input_ids"].size / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        (framework, on), stepper = owner[name]
        info = infos[framework, on]
        label = info["label"] + ("" if framework == "torch" else f", {stepper}") + tag(on)
        mfu = f", MFU {100 * rate * info['flops_per_token'] / info['peak']:.1f}%" if info.get("peak") else ""
        print(f"{label}): {rate:,.0f} tokens/s{mfu} (loss after warm-up {warm_losses[name]:.3f})")
    if not args.skip_torch:
        rounds = f"medians of {args.rounds} interleaved rounds of {args.steps} steps"

        def best(framework: str, on: bool | None = None) -> float:
            return max(r for n, r in rates.items() if owner[n][0][0] == framework and on in (None, owner[n][0][1]))

        setting = " (each at its better huge-page setting)" if len(hugetlb) > 1 else ""
        print(f"ratio ours (best remat) / pytorch{setting}: {best('jax') / best('torch'):.2f}x ({rounds})")
        if len(hugetlb) > 1:  # as each is run by default: our training CLI turns huge pages on, PyTorch leaves them
            print(f"ratio ours with huge pages / pytorch without: {best('jax', True) / best('torch', False):.2f}x")


@contextlib.contextmanager
def glibc_tunables(hugetlb: bool | None):
    """The environment with glibc's huge-page malloc tunable set (True) or removed (False) while a
    worker starts, restored after (None: left as it is); yields the GLIBC_TUNABLES value the worker gets."""
    before = os.environ.get("GLIBC_TUNABLES")
    if hugetlb is None:
        yield before or ""
        return
    kept = [t for t in (before or "").split(":") if t and not t.startswith("glibc.malloc.hugetlb=")]
    value = ":".join([*kept, glibc_thp.TUNABLE] if hugetlb else kept)
    os.environ["GLIBC_TUNABLES"] = value
    try:
        yield value
    finally:
        if before is None:
            os.environ.pop("GLIBC_TUNABLES", None)
        else:
            os.environ["GLIBC_TUNABLES"] = before


if __name__ == "__main__":
    main()
