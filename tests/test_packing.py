"""Sequence packing (`data.batching: pack`): the first-fit packer, packed batch tensors, the block-diagonal
masks and per-segment decoder inputs against per-example references, packed forward/backward equal to the
padded one (dense T5, both attention implementations, token- and task-routed MoE, task tokens), and the
batch builder's packed micro-batches: nothing dropped or repeated, resumable."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.data import Seq2SeqCollator
from t2t_mtl.data.packing import FirstFit, PackedCollator, first_fit, pack_batch, pack_chunks
from t2t_mtl.engine.losses import example_task_ids, per_example_means, per_task_losses
from t2t_mtl.model.moe import convert_to_moe
from t2t_mtl.model.packing import cross_attention_mask, packed_model_inputs, segment_masks, shift_right_in_segments

VOCAB = 60


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _examples(n: int, seed: int = 0, max_in: int = 12, max_tgt: int = 6, tasks: int = 1):
    """n random (input ids + EOS, target ids + EOS, task id) examples."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.integers(2, VOCAB, rng.integers(1, max_in)).tolist() + [1]
        y = rng.integers(2, VOCAB, rng.integers(1, max_tgt)).tolist() + [1]
        out.append((x, y, int(rng.integers(0, tasks))))
    return out


# ------------------------------------------------------------------------------------------------ packer

def test_first_fit_places_each_item_in_the_first_row_of_its_task_with_room():
    packer = FirstFit(rows=3, input_capacity=10, target_capacity=5)
    assert [packer.place(item) for item in [(0, 6, 2), (1, 3, 1), (0, 4, 3), (0, 1, 1), (1, 7, 4), (0, 2, 1)]] \
        == [0, 1, 0, 2, 1, 2]  # (0,1,1): row 0 has no target room, row 1 is task 1 -> the empty row 2
    assert packer.place((2, 1, 1)) is None  # every row holds another task
    assert packer.used_rows() == [[0, 2], [1, 4], [3, 5]]
    with pytest.raises(ValueError, match="exceeds the packed row's 10 / 5"):
        packer.place((0, 11, 1))


def _scan_first_fit(items, rows, input_capacity, target_capacity):
    """The textbook first fit: each item into the first row, scanning all of them, that is empty or holds its task and
    has room (None: no such row); returns the rows chosen and each row's [task, inputs, targets, members]."""
    table = [[None, 0, 0, []] for _ in range(rows)]
    chosen = []
    for task, n_in, n_tgt in items:
        r = next((r for r, (t, i, j, _) in enumerate(table) if t in (None, task) and i + n_in <= input_capacity
                  and j + n_tgt <= target_capacity), None)
        if r is not None:  # members are numbered in placement order, the items placed only
            table[r][0], table[r][1], table[r][2] = task, table[r][1] + n_in, table[r][2] + n_tgt
            table[r][3].append(sum(len(row[3]) for row in table))
        chosen.append(r)
    return chosen, table


def test_first_fit_chooses_the_rows_a_scan_of_every_row_chooses():
    rng = np.random.default_rng(11)
    for _ in range(200):
        rows, cap_in, cap_tgt, tasks = (int(v) for v in (rng.integers(1, 9), rng.integers(4, 30), rng.integers(2, 12),
                                                         rng.integers(1, 6)))
        items = [(int(rng.integers(0, tasks)), int(rng.integers(1, cap_in + 1)), int(rng.integers(1, cap_tgt + 1)))
                 for _ in range(int(rng.integers(0, 40)))]
        packer = FirstFit(rows, cap_in, cap_tgt)
        chosen, table = _scan_first_fit(items, rows, cap_in, cap_tgt)
        assert [packer.place(item) for item in items] == chosen
        assert packer.used_rows() == [members for _, _, _, members in table if members]


def test_pack_batch_writes_each_row_as_its_members_one_after_the_other():
    examples = _examples(40, seed=4, tasks=3)
    inputs, labels, tasks = ([e[i] for e in examples] for i in range(3))
    batch = pack_batch(inputs, labels, tasks, rows=20, input_capacity=30, target_capacity=12, pad_id=0,
                       prefixes={2: [90]}, width_multiple=8)
    seqs = [([90] if t == 2 else []) + x for x, t in zip(inputs, tasks)]
    chosen, table = _scan_first_fit([(t, len(x), len(y)) for x, y, t in zip(seqs, labels, tasks)], 20, 30, 12)
    assert None not in chosen
    used = [members for _, _, _, members in table if members]
    in_w = min(-(-max(sum(len(seqs[k]) for k in m) for m in used) // 8) * 8, 30)
    tgt_w = min(-(-max(sum(len(labels[k]) for k in m) for m in used) // 8) * 8, 12)

    def laid_out(parts, width, fill):  # one row: its members' parts one after the other, then the fill
        row = [v for part in parts for v in part]
        return row + [fill] * (width - len(row))

    encoder_segments = [laid_out([[s] * len(seqs[k]) for s, k in enumerate(m, 1)], in_w, 0) for m in used]
    assert batch["input_ids"].tolist() == [laid_out([seqs[k] for k in m], in_w, 0) for m in used]
    assert batch["labels"].tolist() == [laid_out([labels[k] for k in m], tgt_w, -100) for m in used]
    assert batch["encoder_segment_ids"].tolist() == encoder_segments
    assert batch["decoder_segment_ids"].tolist() == [laid_out([[s] * len(labels[k]) for s, k in enumerate(m, 1)],
                                                              tgt_w, 0) for m in used]
    assert batch["attention_mask"].tolist() == [[int(s > 0) for s in row] for row in encoder_segments]
    assert batch["task_ids"].tolist() == [tasks[m[0]] for m in used] and len(used) > 3


@pytest.mark.parametrize("rows, input_capacity, target_capacity", [(0, 10, 5), (1, 0, 5), (1, 10, 0)])
def test_a_packer_without_room_is_refused(rows, input_capacity, target_capacity):
    # with no row, pack_chunks would cut empty micro-batches for ever
    with pytest.raises(ValueError, match=f"rows, input_capacity and target_capacity >= 1, got {rows}, "
                                         f"{input_capacity}, {target_capacity}"):
        FirstFit(rows, input_capacity, target_capacity)


def test_pack_chunks_cover_every_item_once_within_capacity_and_one_task_per_row():
    rng = np.random.default_rng(3)
    for trial in range(30):
        rows, cap_in, cap_tgt = int(rng.integers(1, 5)), int(rng.integers(4, 20)), int(rng.integers(2, 9))
        items = [(int(rng.integers(0, 3)), int(rng.integers(1, cap_in + 1)), int(rng.integers(1, cap_tgt + 1)))
                 for _ in range(int(rng.integers(0, 60)))]
        chunks, leftover = pack_chunks(items, rows, cap_in, cap_tgt)
        assert sorted([k for c in chunks for k in c] + leftover) == list(range(len(items)))
        assert first_fit([items[k] for k in leftover], rows, cap_in, cap_tgt)[1] == []  # the leftover all fits
        for chunk in chunks:
            packer = FirstFit(rows, cap_in, cap_tgt)  # replaying a chunk places every item again
            assignment = [packer.place(items[k]) for k in chunk]
            assert None not in assignment
            for members in packer.used_rows():
                row = [items[chunk[m]] for m in members]
                assert len({t for t, _, _ in row}) == 1
                assert sum(n for _, n, _ in row) <= cap_in and sum(n for _, _, n in row) <= cap_tgt


def test_pack_batch_lays_examples_out_as_segments():
    examples = _examples(9, seed=1, tasks=2)
    prefixes = {0: [90], 1: [91]}
    batch = pack_batch([e[0] for e in examples], [e[1] for e in examples], [e[2] for e in examples], rows=6,
                       input_capacity=24, target_capacity=10, pad_id=0, prefixes=prefixes, width_multiple=8)
    enc, dec = batch["encoder_segment_ids"], batch["decoder_segment_ids"]
    assert batch["input_ids"].shape[1] % 8 == 0 or batch["input_ids"].shape[1] == 24
    assert torch.equal(batch["attention_mask"], (enc > 0).long())
    seen = []
    for r in range(enc.shape[0]):
        for s in range(1, int(enc[r].max()) + 1):
            x = batch["input_ids"][r][enc[r] == s].tolist()
            y = batch["labels"][r][dec[r] == s].tolist()
            task = int(batch["task_ids"][r])
            assert x[0] == prefixes[task][0]
            seen.append((x[1:], y, task))
        assert (batch["labels"][r][dec[r] == 0] == -100).all() and (batch["input_ids"][r][enc[r] == 0] == 0).all()
    assert sorted(seen) == sorted(examples)
    assert example_task_ids(batch).tolist() == [t for _, _, t in seen]  # row-major segment order
    with pytest.raises(ValueError, match="do not fit 1 packed rows"):
        pack_batch([e[0] for e in examples], [e[1] for e in examples], [0] * 9, rows=1, input_capacity=24,
                   target_capacity=10, pad_id=0)



def test_packed_widths_and_the_task_token_prefix_count_against_the_row_capacity():
    # widths are the longest row rounded up to the multiple, at most the capacity (9 -> 10, not 16)
    batch = pack_batch([[5] * 9], [[6] * 3], [0], rows=1, input_capacity=10, target_capacity=4, pad_id=0)
    assert batch["input_ids"].shape == (1, 10) and batch["labels"].shape == (1, 4)
    # a row holds max_input_length input tokens plus the longest prefix; an example's size includes its task's prefix
    collator = PackedCollator(0, rows=1, max_input_length=5, max_target_length=4, prefixes={0: [90, 91], 1: [92]})
    assert (collator.input_capacity, collator.item(0, 5, 3), collator.item(1, 5, 3)) == (7, (0, 7, 3), (1, 6, 3))
    packed = collator([[5, 6, 7, 8, 1]], [[9, 1]], [0])
    assert packed["input_ids"].tolist() == [[90, 91, 5, 6, 7, 8, 1]]


def test_pack_batch_pads_inputs_with_the_pad_id_and_labels_with_minus_100():
    batch = pack_batch([[5, 1], [6, 6, 1]], [[7, 1], [8, 8, 1]], [0, 1], rows=2, input_capacity=4, target_capacity=3,
                       pad_id=9, width_multiple=1)
    assert batch["input_ids"].tolist() == [[5, 1, 9], [6, 6, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [[7, 1, -100], [8, 8, 1]] and batch["task_ids"].tolist() == [0, 1]


def test_shift_right_in_segments_equals_each_example_shifted_alone():
    examples = _examples(7, seed=2)
    batch = pack_batch([e[0] for e in examples], [e[1] for e in examples], [0] * 7, rows=7, input_capacity=30,
                       target_capacity=12, pad_id=0)
    shifted = shift_right_in_segments(batch["labels"], batch["decoder_segment_ids"], start_id=0, pad_id=0)
    dec = batch["decoder_segment_ids"]
    assert dec.shape[0] < 7
    for r in range(dec.shape[0]):
        for s in range(1, int(dec[r].max()) + 1):
            y = batch["labels"][r][dec[r] == s].tolist()
            assert shifted[r][dec[r] == s].tolist() == [0] + y[:-1]
        assert (shifted[r][dec[r] == 0] == 0).all()


def test_only_cross_attention_rows_of_target_padding_can_be_blocked_entirely_and_then_stay_finite():
    # the row's input is full (no encoder padding), its target is not: the two padded target positions can attend
    # to no input token of their segment (0); every self-attention row has a position to attend to
    enc, dec = torch.tensor([[1, 1, 1, 2, 2, 2]]), torch.tensor([[1, 1, 2, 2, 0, 0]])
    masks = segment_masks(enc, dec, torch.float32)
    low = torch.finfo(torch.float32).min
    for name in ("encoder", "decoder"):
        assert (masks[name][0, 0] == 0).any(-1).all(), name
    blocked = (masks["cross"][0, 0] == low).all(-1)
    assert blocked.tolist() == [False, False, False, False, True, True]
    assert torch.isfinite(masks["cross"]).all()
    model = _t5("eager")
    batch = {"input_ids": torch.randint(2, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0)),
             "labels": torch.tensor([[5, 6, 7, 8, -100, -100]]), "encoder_segment_ids": enc,
             "decoder_segment_ids": dec}
    kwargs, cross = packed_model_inputs(model, batch)
    with cross_attention_mask(model, cross), torch.no_grad():
        assert torch.isfinite(model(**kwargs, use_cache=False).logits).all()


def test_per_example_means_equal_a_loop_over_segments():
    torch.manual_seed(0)
    examples = _examples(11, seed=4, tasks=3)
    batch = pack_batch([e[0] for e in examples], [e[1] for e in examples], [e[2] for e in examples], rows=8,
                       input_capacity=30, target_capacity=12, pad_id=0)
    values = torch.randn(batch["labels"].shape, dtype=torch.float64)
    means, tasks = per_example_means(values, batch["labels"], batch["task_ids"], batch["decoder_segment_ids"])
    dec, expected, expected_tasks = batch["decoder_segment_ids"], [], []
    for r in range(dec.shape[0]):
        for s in range(1, int(dec[r].max()) + 1):
            expected.append(float(values[r][dec[r] == s].mean()))
            expected_tasks.append(int(batch["task_ids"][r]))
    np.testing.assert_allclose(means.numpy(), expected, rtol=1e-12)
    assert tasks.tolist() == expected_tasks == example_task_ids(batch).tolist()


# -------------------------------------------------------------------------------------------------- model

def _t5(attn: str = "sdpa", seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB + 40, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0,
                      attn_implementation=attn)
    return T5ForConditionalGeneration(config)


def _per_example_losses(model, batch, task_names, packed: bool, task_ids: bool = False):
    """(per-example losses, per-task losses, per-task token-mean losses) of one forward of `batch`."""
    import torch.nn.functional as F

    if packed:
        kwargs, cross = packed_model_inputs(model, batch)
    else:
        kwargs, cross = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                         "decoder_input_ids": model._shift_right(batch["labels"])}, None
    if task_ids:
        kwargs["task_ids"] = batch["task_ids"]
    if cross is not None:
        with cross_attention_mask(model, cross):
            logits = model(**kwargs, use_cache=False).logits
    else:
        logits = model(**kwargs, use_cache=False).logits
    labels = batch["labels"]
    token_ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100, reduction="none").view(labels.shape)
    segments = batch.get("decoder_segment_ids")
    means, _ = per_example_means(token_ce, labels, batch["task_ids"], segments)
    return (means, per_task_losses(logits, labels, batch["task_ids"], task_names, segments),
            per_task_losses(logits, labels, batch["task_ids"], task_names, segments, reduction="token"))


def _both_batches(examples, rows=3, prefixes=None):
    inputs = [list((prefixes or {}).get(t, [])) + x for x, _, t in examples]
    padded = Seq2SeqCollator(0, max_input_length=64, max_target_length=16)(inputs, [y for _, y, _ in examples],
                                                                           [t for _, _, t in examples])
    packed = PackedCollator(0, rows=rows, max_input_length=40, max_target_length=14, prefixes=prefixes)(
        [x for x, _, _ in examples], [y for _, y, _ in examples], [t for _, _, t in examples])
    return padded, packed


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_forward_and_backward_equal_the_padded_ones(attn):
    examples = _examples(10, seed=5, tasks=2)
    padded, packed = _both_batches(examples, rows=4)
    assert packed["input_ids"].shape[0] < len(examples)  # several examples share rows
    grads = []
    losses = []
    for batch, is_packed in ((padded, False), (packed, True)):
        model = _t5(attn)
        means, per_task, per_token = _per_example_losses(model, batch, ["a", "b"], is_packed)
        sum(per_task.values()).backward()
        losses.append((sorted(means.detach().tolist()), {k: float(v.detach()) for k, v in per_task.items()},
                       {k: float(v.detach()) for k, v in per_token.items()}))
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    np.testing.assert_allclose(losses[1][0], losses[0][0], rtol=1e-5)
    assert losses[0][1] == pytest.approx(losses[1][1], rel=1e-5)
    assert losses[0][2] == pytest.approx(losses[1][2], rel=1e-5)  # training.loss_reduction: token
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("routing", ["token", "task", "hybrid"])
def test_packed_moe_and_task_tokens_equal_the_padded_forward(routing):
    examples = _examples(9, seed=6, tasks=3)
    prefixes = {0: [VOCAB + 1], 1: [VOCAB + 2], 2: [VOCAB + 3]}
    padded, packed = _both_batches(examples, rows=5, prefixes=prefixes)
    results = []
    for batch, is_packed in ((padded, False), (packed, True)):
        model = convert_to_moe(_t5(seed=2), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                             "dropless": True}, task_names=["a", "b", "c"])
        means, _, _ = _per_example_losses(model, batch, ["a", "b", "c"], is_packed, task_ids=True)
        results.append(sorted(means.detach().tolist()))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5)


class _Engine:
    """What `forward_losses` uses of a DeepSpeed engine: the module, and calling it."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, **kwargs):
        return self.module(**kwargs)


@pytest.mark.parametrize("routing", ["token", "task", "hybrid"])
def test_the_training_forward_keeps_padding_out_of_the_moe_aux_losses(routing):
    # was: the encoder's padding (attention_mask 0, packed segment 0) and the decoder's (labels -100) were routed
    # and counted in the load-balancing and z losses, so a padded and a packed batch of the same examples got
    # different aux losses; now both count the real tokens only (dropless: the same routing of the same tokens)
    from t2t_mtl.engine.trainer import forward_losses

    padded, packed = _both_batches(_examples(9, seed=6, tasks=3), rows=5)
    aux = []
    for batch in (padded, packed):
        model = convert_to_moe(_t5(seed=2), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                             "dropless": True}, task_names=["a", "b", "c"])
        _, loss = forward_losses(_Engine(model), batch, batch["task_ids"], ["a", "b", "c"], pass_task_ids=True)
        aux.append(float(loss.detach()))
    assert aux[1] == pytest.approx(aux[0], rel=1e-5)


def test_the_cross_attention_hook_is_removed_after_the_forward():
    model = _t5()
    examples = _examples(4, seed=7)
    _, packed = _both_batches(examples)
    kwargs, cross = packed_model_inputs(model, packed)
    with cross_attention_mask(model, cross):
        model(**kwargs, use_cache=False)
    assert not model.get_decoder()._forward_pre_hooks


# ---------------------------------------------------------------------------------------- batch builder

def _streams():
    import datasets

    from t2t_mtl.data import TokenizedTask

    out = {}
    for seed, (name, n) in enumerate({"a": 97, "b": 41, "c": 60}.items()):
        examples = _examples(n, seed=10 + seed, max_in=20, max_tgt=8)
        ins, labs = [e[0] for e in examples], [e[1] for e in examples]
        ds = datasets.Dataset.from_dict({"input_ids": ins, "labels": labs})
        out[name] = TokenizedTask(name, "train", ds, np.array([len(x) for x in ins]),
                                  np.array([len(y) for y in labs]), 0)
    return out


def _packed_builder(streams, mode="homogeneous", rows=4, bucket=2, max_input_length=32):
    from t2t_mtl.data import BatchBuilder
    from t2t_mtl.sampling import TaskStreams, build_sampler

    sizes = {k: len(v) for k, v in streams.items()}
    sampler = build_sampler({"strategy": "uniform", "mode": mode}, sizes, seed=3)
    collator = PackedCollator(0, rows=rows, max_input_length=max_input_length, max_target_length=12,
                              pad_to_multiple_of=1)
    return BatchBuilder(streams, sampler, TaskStreams(sizes, seed=3), collator, micro_batch_size=rows, mode=mode,
                        bucket_batches=bucket, seed=5)


def _served_and_waiting(builder, task):
    waiting = [i for _, i in builder.leftover.get(task, [])] + [
        i for chunk in builder.pending.get(task, []) for _, i in chunk]
    return waiting


def test_packed_micro_batches_serve_the_stream_rows_once_each_in_full_rows():
    from t2t_mtl.sampling import TaskStreams

    streams = _streams()
    builder = _packed_builder(streams)
    served = {t: [] for t in streams}
    fill, examples = [], 0
    for _ in range(60):
        chunk = builder.next_chunk()
        assert len({t for t, _ in chunk}) == 1  # homogeneous: one task per micro-batch
        batch = builder.collate(chunk)
        assert batch["input_ids"].shape[0] <= 4 and batch["input_ids"].shape[1] <= 32
        served[chunk[0][0]] += [i for _, i in chunk]
        inputs = batch["attention_mask"].sum(1) / 32
        targets = (batch["labels"] != -100).sum(1) / 12
        fill += torch.maximum(inputs, targets).tolist()  # the share of the row's binding capacity used
        examples += len(chunk)
    assert examples > 2 * 60 * 4  # several examples per row
    assert np.mean(fill) > 0.9  # rows are nearly full
    reference = TaskStreams({k: len(v) for k, v in streams.items()}, seed=3)
    for task, rows in served.items():  # served + waiting rows are exactly the stream's first rows
        drawn = rows + _served_and_waiting(builder, task)
        assert sorted(drawn) == sorted(reference.next_indices(task, len(drawn)))


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_packed_builder_state_continues_identically(mode):
    streams = _streams()
    a = _packed_builder(streams, mode=mode)
    for _ in range(7):
        a.next_chunk()
    assert a.leftover  # the state carries rows waiting for the next packed micro-batches
    state = (a.state_dict(), a.sampler.state_dict(), a.task_streams.state_dict())
    expected = [a.next_chunk() for _ in range(25)]
    b = _packed_builder(streams, mode=mode)
    b.load_state_dict(state[0])
    b.sampler.load_state_dict(state[1])
    b.task_streams.load_state_dict(state[2])
    assert [b.next_chunk() for _ in range(25)] == expected
    batch = b.collate(expected[-1])
    assert set(batch["task_ids"].tolist()) <= {0, 1, 2}


def test_a_short_example_among_equal_ones_is_served_every_epoch():
    import datasets

    from t2t_mtl.data import TokenizedTask

    ins = [[5] * 9 + [1]] * 39 + [[5] * 4 + [1]]  # 39 of 10 tokens, one of 5: sorted last, it must not wait forever
    labs = [[6, 1]] * 40
    task = TokenizedTask("t", "train", datasets.Dataset.from_dict({"input_ids": ins, "labels": labs}),
                         np.array([len(x) for x in ins]), np.array([2] * 40), 0)
    builder = _packed_builder({"t": task})
    served = []
    while len(served) < 10 * 40:  # ten epochs
        served += [i for _, i in builder.next_chunk()]
    assert served.count(39) >= 9 and max(served.count(i) for i in range(40)) <= 11
    assert _served_and_waiting(builder, "t").count(39) <= 1


def test_pack_chunks_with_keys_pack_a_repeat_only_into_room_no_other_item_takes():
    items = [(0, 4, 1)] * 6
    keys = ["a", "a", "b", "b", "c", "c"]
    assert pack_chunks(items, 1, 8, 8) == ([[0, 1], [2, 3]], [4, 5])  # without keys: a, a / b, b
    assert pack_chunks(items, 1, 8, 8, keys=keys) == ([[0, 2], [4, 1]], [3, 5])
    # a repeat still takes room no other item fits, and fills a micro-batch of one distinct example
    assert pack_chunks([(0, 6, 1), (0, 6, 1), (0, 2, 1)], 1, 8, 8, keys=["a", "b", "a"]) == ([[0, 2]], [1])
    assert pack_chunks([(0, 2, 1)] * 5, 1, 8, 8, keys=["a"] * 5) == ([[0, 1, 2, 3]], [4])


def test_packing_a_task_smaller_than_the_draw_keeps_repeats_apart():
    # was: a draw spanning several epochs of a 20-row task was sorted by size, so a row's copies sat side by
    # side and first-fit packed them into one micro-batch: about half of the examples were repeats within it
    import datasets

    from t2t_mtl.data import TokenizedTask

    examples = _examples(20, seed=4, max_in=20, max_tgt=8)
    ins, labs = [e[0] for e in examples], [e[1] for e in examples]
    task = TokenizedTask("s", "train", datasets.Dataset.from_dict({"input_ids": ins, "labels": labs}),
                         np.array([len(x) for x in ins]), np.array([len(y) for y in labs]), 0)
    builder = _packed_builder({"s": task}, bucket=8)
    served = repeats = 0
    for _ in range(60):
        chunk = builder.next_chunk()
        served += len(chunk)
        repeats += len(chunk) - len(set(chunk))
    assert served > 60 * 4 and repeats < 0.05 * served


@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_a_packed_run_resumed_with_bucketing_serves_the_waiting_rows(mode):
    from t2t_mtl.data import BatchBuilder, Seq2SeqCollator
    from t2t_mtl.sampling import TaskStreams, build_sampler

    streams = _streams()
    a = _packed_builder(streams, mode=mode)
    served = [pair for _ in range(7) for pair in a.next_chunk()]
    assert a.leftover
    sizes = {k: len(v) for k, v in streams.items()}
    b = BatchBuilder(streams, build_sampler({"strategy": "uniform", "mode": mode}, sizes, seed=3),
                     TaskStreams(sizes, seed=3), Seq2SeqCollator(0, max_input_length=32, max_target_length=12),
                     micro_batch_size=4, mode=mode, bucket_batches=2, seed=5)
    b.load_state_dict(a.state_dict())
    b.sampler.load_state_dict(a.sampler.state_dict())
    b.task_streams.load_state_dict(a.task_streams.state_dict())
    for _ in range(80):
        chunk = b.next_chunk()
        assert len(chunk) <= 4
        served += chunk
    assert not b.leftover
    reference = TaskStreams(sizes, seed=3)
    for task in streams:  # the rows the packed run left waiting are served too
        rows = [i for t, i in served if t == task] + _served_and_waiting(b, task)
        assert sorted(rows) == sorted(reference.next_indices(task, len(rows)))


@pytest.mark.parametrize("saved_mode, mode", [("homogeneous", "mixed"), ("mixed", "homogeneous")])
def test_a_packed_run_resumed_with_another_sampling_mode_serves_the_waiting_rows(saved_mode, mode):
    from t2t_mtl.sampling import TaskStreams

    streams = _streams()
    a = _packed_builder(streams, mode=saved_mode)
    served = [pair for _ in range(7) for pair in a.next_chunk()]
    assert a.leftover and any(a.pending.values())
    b = _packed_builder(streams, mode=mode)
    b.load_state_dict(a.state_dict())
    b.task_streams.load_state_dict(a.task_streams.state_dict())
    for _ in range(20):
        chunk = b.next_chunk()
        assert mode == "mixed" or len({t for t, _ in chunk}) == 1  # a homogeneous micro-batch holds one task
        served += chunk
    keys = {"*"} if mode == "mixed" else set(streams)
    assert {k for k, rows in b.leftover.items() if rows} | {k for k, queue in b.pending.items() if queue} <= keys
    waiting = [pair for rows in b.leftover.values() for pair in rows] + [
        pair for queue in b.pending.values() for chunk in queue for pair in chunk]
    reference = TaskStreams({k: len(v) for k, v in streams.items()}, seed=3)
    for task in streams:  # nothing lost or repeated across the change
        rows = [i for t, i in served + waiting if t == task]
        assert sorted(rows) == sorted(reference.next_indices(task, len(rows)))

@pytest.mark.parametrize("rows,max_input_length", [(1, 32), (2, 24)])
def test_a_resume_with_smaller_rows_packs_the_saved_micro_batches_again(rows, max_input_length):
    from t2t_mtl.sampling import TaskStreams

    streams = _streams()
    a = _packed_builder(streams, rows=4)
    served = {t: [] for t in streams}
    for _ in range(5):
        chunk = a.next_chunk()
        served[chunk[0][0]] += [i for _, i in chunk]
    assert any(a.pending.values())
    b = _packed_builder(streams, rows=rows, max_input_length=max_input_length)  # changed config
    b.load_state_dict(a.state_dict())
    b.sampler.load_state_dict(a.sampler.state_dict())
    b.task_streams.load_state_dict(a.task_streams.state_dict())
    for _ in range(30):
        chunk = b.next_chunk()
        batch = b.collate(chunk)  # fits the new rows
        assert batch["input_ids"].shape[0] <= rows
        served[chunk[0][0]] += [i for _, i in chunk]
    reference = TaskStreams({k: len(v) for k, v in streams.items()}, seed=3)
    for task, rows_served in served.items():  # nothing lost or repeated across the change
        drawn = rows_served + _served_and_waiting(b, task)
        assert sorted(drawn) == sorted(reference.next_indices(task, len(drawn)))


def test_waiting_rows_of_a_packed_builder_hold_its_micro_batches_and_its_rows_left_to_pack():
    from t2t_mtl.data.batches import waiting_rows
    from t2t_mtl.sampling import TaskStreams

    streams = _streams()
    builder = _packed_builder(streams)
    served = [pair for _ in range(7) for pair in builder.next_chunk()]
    assert builder.leftover and any(builder.pending.values())
    waiting = waiting_rows(builder.state_dict())
    reference = TaskStreams({k: len(v) for k, v in streams.items()}, seed=3)
    for task in streams:  # drawn = served + waiting, each row once
        rows = [i for t, i in served + waiting if t == task]
        assert sorted(rows) == sorted(reference.next_indices(task, builder.task_streams.seen()[task]))


def test_a_packed_draw_takes_the_rows_that_fill_its_micro_batches_by_the_binding_capacity():
    # rows of 8 input and 2 target tokens, 32 / 12 per packed row: the inputs bind (4 rows per packed row, where
    # the targets would take 6), so 2 micro-batches of 4 packed rows draw 2 * 4 * 4 = 32 rows
    import datasets

    from t2t_mtl.data import TokenizedTask

    ins, labs = [[5] * 7 + [1]] * 40, [[6, 1]] * 40
    task = TokenizedTask("s", "train", datasets.Dataset.from_dict({"input_ids": ins, "labels": labs}),
                         np.full(40, 8), np.full(40, 2), 0)
    builder = _packed_builder({"s": task}, bucket=2)
    builder.next_chunk()
    assert builder.task_streams.seen() == {"s": 32}


def test_collators_read_the_ids_through_numpy_not_a_python_list_of_every_id(monkeypatch):
    # was: torch.tensor of a Python list of every id of the batch and, packed, of every position's segment number,
    # built a token at a time (about four times numpy's cost): a packed micro-batch of the shared data's real tasks
    # (32 rows of 256 / 64 tokens) took 3.3 CPU-ms to collate, now 1.9
    examples = _examples(40, seed=4, tasks=3)
    inputs, labels, tasks = ([e[i] for e in examples] for i in range(3))
    tensor, lists = torch.tensor, []
    monkeypatch.setattr(torch, "tensor", lambda data, *args, **kwargs: (
        lists.append(len(data)) if isinstance(data, list) else None) or tensor(data, *args, **kwargs))
    packed = pack_batch(inputs, labels, tasks, rows=20, input_capacity=30, target_capacity=12, pad_id=0,
                        prefixes={2: [90]})
    padded = Seq2SeqCollator(0, max_input_length=30, max_target_length=12)(inputs, labels, tasks)
    assert max(lists) <= len(examples)  # (the rows' and examples' lengths, not their ids)
    monkeypatch.setattr(torch, "tensor", tensor)
    assert padded["input_ids"].tolist() == [x + [0] * (padded["input_ids"].shape[1] - len(x)) for x in inputs]
    assert padded["labels"].tolist() == [y + [-100] * (padded["labels"].shape[1] - len(y)) for y in labels]
    seqs = [([90] if t == 2 else []) + x for x, t in zip(inputs, tasks)]
    real = packed["attention_mask"].bool()
    assert sorted(packed["input_ids"][real].tolist()) == sorted(v for s in seqs for v in s)
    assert [row[row > 0].unique_consecutive().tolist() for row in packed["encoder_segment_ids"]] == \
        [list(range(1, int(row.max()) + 1)) for row in packed["encoder_segment_ids"]]


def test_a_packer_refuses_an_item_larger_than_its_tasks_rows_room_without_reading_them_again():
    # was: each refused item read every row of its task, and a packed draw tries every waiting item against each
    # micro-batch it cuts: homogeneous draws (32 rows of one task) took 2.5 CPU-ms a micro-batch, 15 with
    # bucket_batches 32; now 2.1 and 10
    class Counted(list):
        def __getitem__(self, k):
            reads.append(k)
            return super().__getitem__(k)

    packer = FirstFit(rows=4, input_capacity=10, target_capacity=5)
    assert [packer.place((0, 8, 1)) for _ in range(4)] == [0, 1, 2, 3]
    reads, packer.rows = [], Counted(packer.rows)
    assert packer.place((0, 3, 1)) is None and reads  # (a scan of the task's rows: it learns their room)
    reads.clear()
    assert [packer.place(item) for item in [(0, 3, 1), (0, 1, 5), (1, 1, 1)] * 20] == [None] * 60 and reads == []
    assert packer.place((0, 2, 4)) == 0 and packer.place((0, 1, 4)) == 1  # (room left: 2 / 4 in each row)
    assert packer.used_rows() == [[0, 4], [1, 5], [2], [3]]


def test_a_packer_places_an_empty_item_of_a_task_it_has_not_seen_in_a_row_of_its_own():
    # was a KeyError: an item of no input and no target fitted the unseen task's room (0, 0), whose rows were read
    packer = FirstFit(rows=2, input_capacity=10, target_capacity=5)
    assert packer.place((3, 0, 0)) == 0 and packer.place((4, 0, 0)) == 1 and packer.place((3, 0, 0)) == 0
    assert packer.used_rows() == [[0, 2], [1]]


def _rounds_of_scan_first_fit(items, rows, input_capacity, target_capacity, keys=None):
    """pack_chunks written plainly: rounds of the textbook first fit over the remaining items (with keys, the first
    remaining item of each key first, then the repeats), each round a chunk until one places every item."""
    remaining, chunks = list(range(len(items))), []
    while remaining:
        if keys is not None:
            firsts = [k for n, k in enumerate(remaining) if keys[k] not in {keys[j] for j in remaining[:n]}]
            remaining = firsts + [k for k in remaining if k not in firsts]
        chosen, _ = _scan_first_fit([items[k] for k in remaining], rows, input_capacity, target_capacity)
        placed = [k for k, r in zip(remaining, chosen) if r is not None]
        if len(placed) == len(remaining):
            return chunks, remaining
        chunks.append(placed)
        remaining = [k for k, r in zip(remaining, chosen) if r is None]
    return chunks, []


def test_pack_chunks_equal_rounds_of_the_textbook_first_fit_with_and_without_repeated_keys():
    rng = np.random.default_rng(23)
    for trial in range(150):
        rows, cap_in, cap_tgt, tasks = (int(v) for v in (rng.integers(1, 7), rng.integers(4, 30), rng.integers(2, 12),
                                                         rng.integers(1, 5)))
        items = [(int(rng.integers(0, tasks)), int(rng.integers(0, cap_in + 1)), int(rng.integers(0, cap_tgt + 1)))
                 for _ in range(int(rng.integers(0, 120)))]
        distinct = list(range(len(items)))
        repeated = [int(k) for k in rng.integers(0, max(1, len(items) // 2), len(items))]
        for keys in (None, distinct, repeated):
            assert pack_chunks(items, rows, cap_in, cap_tgt, keys=keys) == \
                _rounds_of_scan_first_fit(items, rows, cap_in, cap_tgt, keys), (trial, keys)


def test_pack_chunks_pass_over_items_a_full_packer_refuses_without_placing_them(monkeypatch):
    # was: every remaining item went through FirstFit.place in every round, and the remaining items were reordered
    # for repeated keys in every round, repeats or none: a packed draw of 32 rows took 0.41 CPU-s of pack_chunks per
    # 400 micro-batches (quickstart's tasks, mixed, bucket_batches 32), now 0.19
    import t2t_mtl.data.packing as packing

    calls = []
    place = FirstFit.place
    monkeypatch.setattr(FirstFit, "place", lambda self, item: calls.append(item) or place(self, item))
    monkeypatch.setattr(packing, "_repeats_last", lambda positions, keys: calls.append("reordered") or positions)
    items = [(0, 8, 1)] * 4 + [(0, 3, 1), (1, 1, 1)] * 20 + [(0, 2, 4)]
    assert first_fit(items, 4, 10, 5) == ([0, 1, 2, 3, 44], list(range(4, 44)))
    assert calls == [(0, 8, 1)] * 4 + [(0, 3, 1), (0, 2, 4)]  # (the first refused item: a scan learns the room)
    calls.clear()
    chunks, leftover = pack_chunks(items, 4, 10, 5, keys=list(range(len(items))))
    assert "reordered" not in calls and chunks[0] == [0, 1, 2, 3, 44] and len(calls) < 2 * len(items)
