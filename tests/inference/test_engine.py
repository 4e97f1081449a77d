"""The continuous-batching engine: greedy tokens equal generate()'s (alone, in a batch, among other
requests that come and go, across cache shifts), per-request sampling, stop strings, cancellation,
no compilation after warm-up."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from jax import monitoring

from rolellm_jax.inference import kv_slots
from rolellm_jax.inference.engine import ContextTooLong, Engine, EngineBusy, Finished, Piece, Request
from rolellm_jax.inference.generate import GenerationError, SamplingConfig, generate
from tests.helpers.serving_fixtures import tiny_serving_model

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # once per jit cache miss


@pytest.fixture(scope="module")
def served():
    model, tokenizer = tiny_serving_model()
    return model, tokenizer, (tokenizer.eos_token_id,)


def random_prompts(lengths, seed=0, vocab=300) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=n).tolist() for n in lengths]


def run_all(engine: Engine, requests: list[Request]) -> list[tuple[str, Finished]]:
    """Submit every request at once; (streamed text, final event) of each."""
    handles = [engine.submit(r) for r in requests]
    out = []
    for h in handles:
        events = list(h)
        out.append(("".join(e.text for e in events if isinstance(e, Piece)), events[-1]))
    return out


@pytest.mark.parametrize("layout", ["cpu", "stacked"])
def test_greedy_equals_generate_among_requests_that_come_and_go(served, monkeypatch, layout) -> None:
    """On a CPU the engine runs generate()'s per-layer layout (its cache written in place, each layer
    reading the live window); "stacked" is the layout of GPUs and TPUs (the window copied out)."""
    from rolellm_jax.inference import engine as engine_module

    model, tokenizer, eos = served
    if layout == "stacked":
        monkeypatch.setattr(engine_module, "decoding_layout", lambda m: m)
    shifts = []
    real_shift = kv_slots.shift_cache
    monkeypatch.setattr(
        kv_slots, "shift_cache", lambda cache, shift: (shifts.append(int(shift)), real_shift(cache, shift))[1]
    )
    lengths, budgets = (5, 17, 3, 9, 30, 12, 7, 21), (20, 6, 14, 20, 9, 20, 3, 17)
    prompts = random_prompts(lengths)
    want = [
        generate(model, [p], SamplingConfig(max_new_tokens=m, eos_token_ids=eos), batch_size=1)[0]
        for p, m in zip(prompts, budgets)
    ]
    # 2 slots for 8 requests, 48 cache slots: rows are taken as others finish and the cache shifts
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=2, max_len=48, prefill_budget=16).start()
    assert isinstance(engine.table.cache["k"], tuple) == (layout == "cpu")
    try:
        together = run_all(engine, [Request(tuple(p), m) for p, m in zip(prompts, budgets)])
        alone = [run_all(engine, [Request(tuple(p), m)])[0] for p, m in zip(prompts[:2], budgets[:2])]
    finally:
        engine.stop()
    assert [list(f.token_ids) for _, f in together] == want
    assert [list(f.token_ids) for _, f in alone] == want[:2]
    for (text, fin), ids, m in zip(together, want, budgets):
        assert text == tokenizer.decode(ids, skip_special_tokens=True)
        assert fin.reason == ("length" if len(ids) == m else "stop")
        assert fin.completion_tokens == len(ids)
    # the cache was shifted both ways while rows were live (left at its end, right before a wide prefill)
    assert any(x > 0 for x in shifts) and any(x < 0 for x in shifts), shifts


def test_requests_prefilled_together_equal_each_alone(served, monkeypatch) -> None:
    model, tokenizer, eos = served
    shapes = []
    real_prefill = kv_slots.prefill_rows
    monkeypatch.setattr(
        kv_slots, "prefill_rows", lambda g, s, c, ids, *a: (shapes.append(ids.shape), real_prefill(g, s, c, ids, *a))[1]
    )
    prompts = random_prompts((3, 9, 14, 5, 30, 2, 11, 7), seed=5)
    want = [generate(model, [p], SamplingConfig(max_new_tokens=9, eos_token_ids=eos), batch_size=1)[0] for p in prompts]
    hot = Request(tuple(prompts[0]), 9, temperature=1.2, top_k=40, seed=11)
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=8, max_len=64)
    # submitted before the loop runs: all nine wait; the first prefill call takes eight of them (the
    # sampled one among them), the last one joins in the next call while those eight decode
    handles = [engine.submit(r) for r in [hot] + [Request(tuple(p), 9) for p in prompts]]
    engine.start()
    try:
        together = [list(h)[-1] for h in handles]
        hot_alone = run_all(engine, [hot])[0][1]
    finally:
        engine.stop()
    assert shapes[:2] == [(8, 32), (1, 16)], shapes  # prompts of 2..30 tokens left-padded to one bucket
    assert [list(f.token_ids) for f in together[1:]] == want
    assert together[0].token_ids == hot_alone.token_ids


def test_a_failing_prefill_batch_fails_only_its_bad_request(served, monkeypatch) -> None:
    model, tokenizer, eos = served
    prompts = random_prompts((6, 13, 4, 9), seed=6)
    poison = prompts[2][0]
    real_prefill, shapes = kv_slots.prefill_rows, []

    def failing(g, s, cache, ids, *args):
        shapes.append(ids.shape)
        if (ids == poison).any():
            raise RuntimeError("injected prefill failure")
        return real_prefill(g, s, cache, ids, *args)

    monkeypatch.setattr(kv_slots, "prefill_rows", failing)
    want = [generate(model, [p], SamplingConfig(max_new_tokens=6, eos_token_ids=eos), batch_size=1)[0] for p in prompts]
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=4, max_len=48)
    handles = [engine.submit(Request(tuple(p), 6)) for p in prompts]
    engine.start()
    try:
        done = [list(h)[-1] for h in handles]
    finally:
        engine.stop()
    assert shapes[0][0] == 4 and [s[0] for s in shapes[1:]] == [1, 1, 1, 1], shapes  # the batch, then each alone
    assert done[2].reason == "error" and "injected prefill failure" in done[2].error
    assert [list(f.token_ids) for i, f in enumerate(done) if i != 2] == [w for i, w in enumerate(want) if i != 2]


def test_repetition_penalty_equals_generate(served) -> None:
    model, tokenizer, eos = served
    prompts = random_prompts((5, 17, 3))
    want = [
        generate(model, [p], SamplingConfig(max_new_tokens=12, eos_token_ids=eos, repetition_penalty=1.8))[0]
        for p in prompts
    ]
    assert want != [generate(model, [p], SamplingConfig(max_new_tokens=12, eos_token_ids=eos))[0] for p in prompts]
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=2, max_len=48).start()
    try:  # with a penalty-free neighbour decoding beside them
        got = run_all(engine, [Request(tuple(p), 12, repetition_penalty=1.8) for p in prompts] + [Request((4, 5), 9)])
    finally:
        engine.stop()
    assert [list(f.token_ids) for _, f in got[:3]] == want


def test_min_tokens_equals_generate_and_holds_stop_strings(served) -> None:
    model, tokenizer, _ = served
    prompts = random_prompts((5, 17, 3))
    eos = (generate(model, prompts[:1], SamplingConfig(max_new_tokens=1))[0][0],)  # prompt 0's first token
    sampling = lambda **more: SamplingConfig(max_new_tokens=12, eos_token_ids=eos, **more)
    want = [generate(model, [p], sampling(min_new_tokens=6))[0] for p in prompts]
    assert len(want[0]) >= 6 and generate(model, prompts[:1], sampling())[0] == []  # held back from step 0 on
    assert len(generate(model, [prompts[1]], sampling())[0]) >= 8  # prompt 1: no EOS early on, so a stop string ends it
    text = tokenizer.decode(want[1], skip_special_tokens=True)
    stop = text[: max(len(tokenizer.decode(want[1][:2], skip_special_tokens=True)), 1)]  # said in its first tokens
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=2, max_len=48).start()
    try:  # beside a neighbour with no minimum
        got = run_all(engine, [Request(tuple(p), 12, min_tokens=6) for p in prompts] + [Request((4, 5), 9)])
        (_, early), (held_text, held) = run_all(
            engine,
            [Request(tuple(prompts[1]), 12, stop=(stop,)), Request(tuple(prompts[1]), 12, stop=(stop,), min_tokens=8)],
        )
        with pytest.raises(GenerationError, match=r"min_tokens=13: must be in \[0, max_tokens=12\]"):
            engine.submit(Request(tuple(prompts[0]), 12, min_tokens=13))
    finally:
        engine.stop()
    assert [list(f.token_ids) for _, f in got[:3]] == want
    # the stop string ends a request at once, but not before its min_tokens
    assert early.reason == "stop" and early.completion_tokens <= 2
    assert held.completion_tokens >= 8 and held_text.startswith(stop)


def test_no_compilation_after_warmup(served, monkeypatch) -> None:
    import jax
    from flax import nnx

    _, tokenizer, eos = served
    model, _ = tiny_serving_model()
    # params committed to their device, as load_model leaves them: every step's outputs are then committed
    nnx.update(model, jax.device_put(nnx.state(model), jax.devices()[0]))
    # min_span 16: decode steps read windows of 16, 32 or all 64 slots as the live span grows
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=2, max_len=64, min_span=16)
    lowered, prefills, spans = [], [], []
    listener = lambda event, _secs, **_: lowered.append(event) if event == LOWERING_EVENT else None
    monitoring.register_event_duration_secs_listener(listener)
    try:
        engine.warmup()
        assert lowered, "the listener sees the warm-up's compilations"
        lowered.clear()
        real_prefill, real_decode = kv_slots.prefill_rows, kv_slots.decode_rows
        monkeypatch.setattr(
            kv_slots,
            "prefill_rows",
            lambda g, s, c, ids, *a: (prefills.append(ids.shape), real_prefill(g, s, c, ids, *a))[1],
        )
        monkeypatch.setattr(
            kv_slots, "decode_rows", lambda *a, span: (spans.append(span), real_decode(*a, span=span))[1]
        )
        engine.start()
        requests = [
            Request(tuple(p), m, temperature=t, top_p=tp, top_k=k, seed=s, stop=stop, repetition_penalty=rp)
            for p, m, t, tp, k, s, stop, rp in zip(
                random_prompts((2, 15, 33, 7, 20)),
                (5, 7, 6, 3, 12),
                (0.0, 1.0, 0.7, 0.0, 1.3),
                (1.0, 0.9, 1.0, 1.0, 0.5),
                (0, 0, 20, 0, 5),
                (1, 2, 3, None, None),
                ((), ("a",), (), ("ing", "x"), ()),
                (1.0, 1.2, 1.0, 1.5, 0.9),
            )
        ]
        run_all(engine, requests)
    finally:
        engine.stop()
        monitoring.unregister_event_duration_listener(listener)
    assert lowered == []
    # what ran covers batched prefills and several attention windows, so the count above means something
    assert any(k > 1 for k, _ in prefills) and len(set(spans)) >= 2 and min(spans) < 64, (prefills, spans)


def test_sampled_requests_depend_on_their_own_seed_only(served) -> None:
    model, tokenizer, eos = served
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=4, max_len=64).start()
    prompt = tuple(random_prompts((6,))[0])
    hot = dict(temperature=1.5, top_k=50, top_p=0.95)
    others = [Request(tuple(p), 12, **hot, seed=9 + i) for i, p in enumerate(random_prompts((4, 11, 8), seed=1))]
    try:
        alone = run_all(engine, [Request(prompt, 12, **hot, seed=7)])[0][1].token_ids
        crowd = run_all(engine, [*others, Request(prompt, 12, **hot, seed=7)])[-1][1].token_ids
        other_seed = run_all(engine, [Request(prompt, 12, **hot, seed=8)])[0][1].token_ids
        greedy = run_all(engine, [Request(prompt, 12)])[0][1].token_ids
        top1 = run_all(engine, [Request(prompt, 12, temperature=1.0, top_k=1, seed=3)])[0][1].token_ids
    finally:
        engine.stop()
    assert crowd == alone
    assert other_seed != alone and greedy != alone
    assert top1 == greedy  # top_k=1 leaves only the argmax


def test_stop_string_cuts_the_text_and_frees_the_slot(served) -> None:
    model, tokenizer, eos = served
    engine = Engine(model, tokenizer, eos_token_ids=(), slots=1, max_len=64).start()
    prompt = tuple(random_prompts((5,), seed=3)[0])
    try:
        free_text, _ = run_all(engine, [Request(prompt, 30)])[0]
        stop = free_text[len(free_text) // 2 : len(free_text) // 2 + 2]
        assert stop.strip(), free_text
        text, fin = run_all(engine, [Request(prompt, 30, stop=(stop, "never-there"))])[0]
    finally:
        engine.stop()
    assert text == free_text[: free_text.index(stop)] and fin.reason == "stop"
    assert fin.completion_tokens < 30


def test_cancelled_request_frees_its_slot(served) -> None:
    model, tokenizer, eos = served
    engine = Engine(model, tokenizer, eos_token_ids=(), slots=1, max_len=64).start()
    first_piece = threading.Event()
    events = []

    def sink(event):
        events.append(event)
        if isinstance(event, Piece):
            first_piece.set()

    try:
        handle = engine.submit(Request((5, 6, 7), 60), sink)
        assert first_piece.wait(60)
        handle.cancel()
        # the only slot is needed by the next request: it is served once the first is dropped
        text, fin = run_all(engine, [Request((8, 9), 4)])[0]
    finally:
        engine.stop()
    assert fin.reason == "length" and fin.completion_tokens == 4
    assert isinstance(events[-1], Finished) and events[-1].reason == "cancelled"
    assert events[-1].completion_tokens < 60


def test_bad_requests_are_refused_before_they_wait(served) -> None:
    model, tokenizer, eos = served
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=1, max_len=32, max_queue=1)
    with pytest.raises(ContextTooLong, match="prompt of 30 tokens \\+ max_tokens 5 = 35 exceeds .* 32 tokens"):
        engine.submit(Request(tuple(range(3, 33)), 5))
    with pytest.raises(GenerationError, match="top_p"):
        engine.submit(Request((3,), 5, temperature=1.0, top_p=0.0))
    with pytest.raises(GenerationError, match="empty"):
        engine.submit(Request((), 5))
    engine.submit(Request((3,), 5))  # not started: this one waits for the free slot
    engine.submit(Request((3,), 5))  # this one in the queue (1 place): now full
    with pytest.raises(EngineBusy, match="all 1 slots are busy"):
        engine.submit(Request((3,), 5))


def test_greedy_on_8_device_mesh_equals_single_device(served) -> None:
    import jax
    from flax import nnx

    from rolellm_jax.parallel import sharding

    _, tokenizer, eos = served
    model, _ = tiny_serving_model()  # its own copy: sharding places its params
    prompts = random_prompts((5, 17, 9, 12), seed=4)
    want = [
        generate(model, [p], SamplingConfig(max_new_tokens=10, eos_token_ids=eos), batch_size=1)[0] for p in prompts
    ]
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=4, max_len=48, mesh=mesh).start()
    try:
        got = run_all(engine, [Request(tuple(p), 10) for p in prompts])
    finally:
        engine.stop()
    assert [list(f.token_ids) for _, f in got] == want
    assert all(len(a.sharding.device_set) == 8 for a in engine.table.cache["k"])


def test_a_request_that_fails_mid_way_ends_alone(served, monkeypatch) -> None:
    from rolellm_jax.inference import text_stream

    model, tokenizer, eos = served
    real_push = text_stream.TextStream.push

    def push(self, token, **options):
        if len(self.ids) == 3 and "boom" in self.stop:  # only the request asking for it fails
            raise RuntimeError("detokenizer exploded")
        return real_push(self, token, **options)

    monkeypatch.setattr(text_stream.TextStream, "push", push)
    engine = Engine(model, tokenizer, eos_token_ids=(), slots=2, max_len=48).start()
    try:
        (_, bad), (_, good) = run_all(engine, [Request((5, 6, 7), 10, stop=("boom",)), Request((8, 9), 10)])
        (_, after), *_ = run_all(engine, [Request((5, 6, 7), 10)])
    finally:
        engine.stop()
    assert bad.reason == "error" and "detokenizer exploded" in bad.error and bad.completion_tokens == 4
    assert good.reason == "length" and good.completion_tokens == 10
    assert after.reason == "length" and engine.table.active_count() == 0
