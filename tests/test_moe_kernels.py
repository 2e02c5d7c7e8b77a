"""MoE routing kernels (Triton, under TRITON_INTERPRET=1 on CPU) against the PyTorch references."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from t2t_kernels.moe import (MoEKernelError, combine, expert_capacity, load_balancing_loss, permute, plan_dispatch,
                         route, router_z_loss)
from t2t_kernels.moe.reference import combine_reference, dispatch_reference, permute_reference, router_reference
from conftest import REPO_ROOT

DEVICE = "cuda" if os.environ.get("T2T_MTL_TRITON_ON_GPU") and torch.cuda.is_available() else "cpu"


def _logits(n: int, e: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, e, generator=g).to(DEVICE)


def _check_router(logits: torch.Tensor, k: int, score: str, renormalize: bool) -> None:
    lg_t = logits.clone().requires_grad_(True)
    lg_r = logits.clone().requires_grad_(True)
    out_t = route(lg_t, k, score=score, renormalize=renormalize, backend="triton")
    out_r = route(lg_r, k, score=score, renormalize=renormalize, backend="reference")
    assert torch.equal(out_t.topk_idx.cpu(), out_r.topk_idx.cpu())
    assert torch.equal(out_t.counts.cpu(), out_r.counts.cpu())
    for name in ("gates", "prob_sums", "lse"):
        torch.testing.assert_close(getattr(out_t, name), getattr(out_r, name), rtol=1e-5, atol=1e-5)
    n, e = logits.shape
    g = torch.Generator().manual_seed(1)
    w_gates, w_probs, w_lse = (torch.randn(*s, generator=g).to(DEVICE) for s in ((n, k), (e,), (n,)))

    def objective(o):
        return (o.gates * w_gates).sum() + (o.prob_sums * w_probs).sum() + (o.lse * w_lse).sum()

    (grad_t,) = torch.autograd.grad(objective(out_t), lg_t)
    (grad_r,) = torch.autograd.grad(objective(out_r), lg_r)
    torch.testing.assert_close(grad_t, grad_r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_router_matches_reference_forward_and_backward_prime_experts(k, score, renormalize):
    _check_router(_logits(37, 5), k, score, renormalize)  # E = 5 is prime; k = 5 is k = E


@pytest.mark.parametrize("n,e,k", [(3, 7, 2), (1, 2, 1), (150, 13, 2), (20, 64, 2)])
def test_router_shapes_below_and_above_block_size(n, e, k):
    _check_router(_logits(n, e, seed=n), k, "softmax", k > 1)


def test_router_every_token_to_one_expert():
    logits = _logits(40, 6)
    logits[:, 4] += 30.0
    out = route(logits, 1, backend="triton")
    assert (out.topk_idx == 4).all()
    assert out.counts.tolist() == [0, 0, 0, 0, 40, 0]
    _check_router(logits, 2, "softmax", True)


def test_router_statistics_match_formulas():
    logits = _logits(50, 4, seed=3)
    out = route(logits, 2, backend="triton")
    assert int(out.counts.sum()) == 50 * 2
    torch.testing.assert_close(out.prob_sums, torch.softmax(logits, -1).sum(0))
    torch.testing.assert_close(out.lse, torch.logsumexp(logits, -1))
    probs = torch.softmax(logits, -1)
    top = torch.topk(logits, 2, -1).indices
    f = torch.zeros(4).index_add_(0, top.reshape(-1).cpu(), torch.ones(100)) / 100
    expected_lb = 4 * (f.to(DEVICE) * probs.mean(0)).sum()
    torch.testing.assert_close(load_balancing_loss(out.counts, out.prob_sums, 50, 2), expected_lb)
    torch.testing.assert_close(router_z_loss(out.lse), (torch.logsumexp(logits, -1) ** 2).mean())



def test_gates_are_the_top_k_probabilities_renormalised_by_default_only_for_k_above_one():
    # Switch's convention: a top-1 gate stays the router probability (renormalised it would be 1.0, and the router
    # would get no gradient); k > 1 renormalises over the k unless told otherwise
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, -1.0, 0.5]])
    probs = torch.softmax(logits, -1)
    top1, top2 = probs.max(-1, keepdim=True).values, probs.topk(2, -1).values
    for backend in ("triton", "reference"):
        def gates(k, renormalize=None):
            return route(logits.to(DEVICE), k, renormalize=renormalize, backend=backend).gates.cpu()

        torch.testing.assert_close(gates(1), top1)
        torch.testing.assert_close(gates(1, True), torch.ones(2, 1))
        torch.testing.assert_close(gates(2), top2 / top2.sum(-1, keepdim=True))
        torch.testing.assert_close(gates(2, False), top2)


def _assert_plans_equal(a, b) -> None:
    for field in ("dest", "row_src", "offsets", "counts", "kept"):
        assert torch.equal(getattr(a, field).long().cpu(), getattr(b, field).long().cpu()), field
    assert a.capacity == b.capacity and a.segments == b.segments


def _assert_plan_invariants(plan, topk_idx: torch.Tensor, num_experts: int) -> None:
    n, k = topk_idx.shape
    dest, row_src = plan.dest.long().cpu(), plan.row_src.long().cpu()
    counts, kept, offsets = plan.counts.long().cpu(), plan.kept.long().cpu(), plan.offsets.long().cpu()
    assert int(counts.sum()) == n * k
    assert torch.equal(counts, torch.bincount(topk_idx.reshape(-1).long().cpu(), minlength=num_experts))
    assert torch.equal(kept, counts.clamp(max=plan.capacity))
    assert torch.equal(offsets[1:] - offsets[:-1], kept) and int(offsets[0]) == 0
    assert plan.num_rows == int(kept.sum()) == row_src.numel()
    flat = torch.arange(n * k).view(n, k)
    kept_mask = dest >= 0
    # the permutation inverts: row -> (token, slot) -> row
    assert torch.equal(row_src[dest[kept_mask]], flat[kept_mask])
    assert torch.equal(dest.reshape(-1)[row_src], torch.arange(row_src.numel()))
    # each row lies in its expert's segment
    experts = topk_idx.long().cpu()
    assert ((dest >= offsets[experts]) | ~kept_mask).all() and ((dest < offsets[experts + 1]) | ~kept_mask).all()
    # dropped slots are exactly the ones over capacity, later in slot-major order
    assert int((~kept_mask).sum()) == int((counts - kept).sum())


@pytest.mark.parametrize("n,e,k,capacity", [
    (37, 5, 2, None), (37, 5, 2, 3), (37, 5, 1, 4), (37, 5, 5, None), (37, 5, 5, 20),
    (3, 7, 2, None), (300, 11, 2, 40), (300, 3, 1, 0),
])
def test_dispatch_matches_reference_and_invariants(n, e, k, capacity):
    idx = route(_logits(n, e, seed=n + e), k, backend="reference").topk_idx
    plan_t = plan_dispatch(idx, e, capacity, backend="triton")
    plan_r = plan_dispatch(idx, e, capacity, backend="reference")
    _assert_plans_equal(plan_t, plan_r)
    _assert_plan_invariants(plan_t, idx, e)
    _assert_plans_equal(plan_dispatch(idx, e, capacity, backend="triton", check_ids=False), plan_t)  # route's ids


def test_dispatch_empty_experts_and_single_expert():
    idx = torch.tensor([[2, 6], [6, 2], [2, 6], [6, 2]], dtype=torch.int32, device=DEVICE)
    plan = plan_dispatch(idx, 8, None, backend="triton")
    _assert_plans_equal(plan, dispatch_reference(idx, 8, None))
    assert plan.kept.tolist() == [0, 0, 4, 0, 0, 0, 4, 0]
    assert plan.segments == [0, 0, 0, 4, 4, 4, 4, 8, 8]
    # slot-major claiming: at capacity 2 all first choices win and every second choice is dropped
    capped = plan_dispatch(idx, 8, 2, backend="triton")
    _assert_plans_equal(capped, dispatch_reference(idx, 8, 2))
    assert capped.dest.tolist() == [[0, -1], [2, -1], [1, -1], [3, -1]]


def test_dispatch_every_token_to_one_expert_over_capacity():
    idx = torch.full((150, 1), 3, dtype=torch.int32, device=DEVICE)  # 150 assignments span two 128-blocks
    plan = plan_dispatch(idx, 5, 130, backend="triton")
    _assert_plans_equal(plan, dispatch_reference(idx, 5, 130))
    _assert_plan_invariants(plan, idx, 5)
    assert plan.dest[:130, 0].tolist() == list(range(130)) and (plan.dest[130:] == -1).all()


def test_dispatch_over_more_experts_than_one_full_tile_holds():
    """A [128, 16384] tile passes Triton's 2^20 elements (and would take minutes to build): BLOCK_A shrinks to 8."""
    num_experts = 10_000
    idx = torch.randint(0, num_experts, (40, 2), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    idx[:, 1] = (idx[:, 0] + 1) % num_experts
    idx[:5, 0] = num_experts - 1  # 80 assignments over 10 blocks of 8, one expert over capacity
    for capacity in (None, 3):
        plan = plan_dispatch(idx, num_experts, capacity, backend="triton")
        _assert_plans_equal(plan, dispatch_reference(idx, num_experts, capacity))
        _assert_plan_invariants(plan, idx, num_experts)


def test_triton_routing_refuses_more_experts_than_its_tiles_hold():
    with pytest.raises(MoEKernelError, match=r"dispatch takes at most 16384 experts, got 16385; use backend='refer"):
        plan_dispatch(torch.zeros(2, 1, dtype=torch.int32, device=DEVICE), 2 ** 14 + 1, backend="triton")
    with pytest.raises(MoEKernelError, match=r"router takes at most 1048576 experts, got 1048577; use backend='refer"):
        route(torch.zeros(1, 2 ** 20 + 1, device=DEVICE), 1, backend="triton")


def test_dispatch_reference_rank_order_is_slot_major_then_token():
    idx = torch.tensor([[0, 1], [1, 0], [0, 1]])
    plan = dispatch_reference(idx, 2, None)
    # expert 0 rows: (t0,s0), (t2,s0), (t1,s1); expert 1 rows: (t1,s0), (t0,s1), (t2,s1)
    assert plan.row_src.tolist() == [0, 4, 3, 2, 1, 5]


@pytest.mark.parametrize("n,e,k,d,capacity", [
    (37, 5, 2, 20, None), (37, 5, 2, 20, 3), (5, 3, 3, 7, None), (70, 4, 1, 130, 10), (2, 2, 2, 1, 1),
    (6, 3, 2, 4, 0),
])
def test_permute_and_combine_match_reference_forward_and_backward(n, e, k, d, capacity):
    idx = route(_logits(n, e, seed=d), k, backend="reference").topk_idx
    plan = plan_dispatch(idx, e, capacity, backend="reference")
    g = torch.Generator().manual_seed(d)
    x = torch.randn(n, d, generator=g).to(DEVICE)
    gates = torch.rand(n, k, generator=g).to(DEVICE)
    w = torch.randn(plan.num_rows, d, generator=g).to(DEVICE)
    upstream = torch.randn(n, d, generator=g).to(DEVICE)
    results = []
    for backend in ("triton", "reference"):
        xb = x.clone().requires_grad_(True)
        gb = gates.clone().requires_grad_(True)
        rows = permute(xb, plan, backend=backend)
        out = combine(torch.tanh(rows) * w, plan, gb, backend=backend)
        dx, dg = torch.autograd.grad((out * upstream).sum(), [xb, gb])
        results.append((rows, out, dx, dg))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    rows, out = results[0][:2]
    assert torch.equal(rows, x[plan.row_src.long() // k])
    fully_dropped = (plan.dest < 0).all(1)
    assert (out[fully_dropped] == 0).all()


def _rows_past_2_31_elements(values: torch.Tensor, tmp_path, name: str) -> torch.Tensor:
    """values [3, d] copied into a view whose row 2 starts at element 2·(2^30 + 64) > 2^31 (int32 offsets wrap).
    On CPU the view lies in a sparse memory-mapped file (only the touched pages exist)."""
    stride = 2 ** 30 + 64
    size = 2 * stride + values.shape[1]
    if DEVICE == "cuda":
        storage = torch.zeros(size, dtype=values.dtype, device=DEVICE)
    else:
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(size * values.element_size())
        storage = torch.from_file(str(path), shared=True, size=size, dtype=values.dtype)
    rows = storage.as_strided(tuple(values.shape), (stride, 1))
    rows.copy_(values)
    return rows


def test_permute_and_combine_address_token_rows_past_2_31_elements(tmp_path):
    """Token rows are read in place at any row stride, so their offsets (token · stride) must be int64."""
    n, e, k, d = 3, 4, 2, 300
    idx = route(_logits(n, e), k, backend="reference").topk_idx
    plan = plan_dispatch(idx, e, None, backend="reference")
    g = torch.Generator().manual_seed(0)
    x_values, upstream_values = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    x = _rows_past_2_31_elements(x_values, tmp_path, "x.bin")
    upstream = _rows_past_2_31_elements(upstream_values, tmp_path, "upstream.bin")
    y = torch.randn(plan.num_rows, d, generator=g).to(DEVICE)
    gates = torch.rand(n, k, generator=g).to(DEVICE)
    rows = permute(x, plan, backend="triton")
    assert torch.equal(rows.cpu(), x_values[plan.row_src.long().cpu() // k])
    results = []
    for backend in ("triton", "reference"):
        yb, gb = y.clone().requires_grad_(True), gates.clone().requires_grad_(True)
        out = combine(yb, plan, gb, backend=backend)
        results.append((out, *torch.autograd.grad(out, [yb, gb], grad_outputs=upstream)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_reference_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for score in ("softmax", "sigmoid"):
        for renorm in (True, False):
            def router_outputs(lg, score=score, renorm=renorm):
                out = router_reference(lg, 2, score, renorm)
                return out.gates, out.prob_sums, out.lse
            assert torch.autograd.gradcheck(router_outputs, (logits,))
    idx = router_reference(logits.detach(), 2).topk_idx
    plan = dispatch_reference(idx, 4, 2)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(plan.num_rows, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gates = torch.rand(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: permute_reference(t, plan), (x,))
    assert torch.autograd.gradcheck(lambda a, b: combine_reference(a, plan, b), (y, gates))


@pytest.mark.parametrize("capacity", [None, 2])
def test_triton_permute_and_combine_pass_gradcheck_in_float64(capacity):
    """fp64 rows, expert outputs and gates are summed in fp64 on the Triton path too (an fp32 sum fails)."""
    g = torch.Generator().manual_seed(0)
    idx = route(_logits(5, 4), 2, backend="reference").topk_idx
    plan = plan_dispatch(idx, 4, capacity, backend="reference")
    x = torch.randn(5, 3, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(True)
    y = torch.randn(plan.num_rows, 3, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(True)
    gates = torch.rand(5, 2, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: permute(t, plan, backend="triton"), (x,))
    assert torch.autograd.gradcheck(lambda a, b: combine(a, plan, b, backend="triton"), (y, gates))


def test_aux_losses_of_float64_router_statistics_pass_gradcheck():
    """The z-loss and the load-balancing loss keep fp64 statistics in fp64 (an fp32 cast fails gradcheck)."""
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    counts = router_reference(logits.detach(), 2).counts
    assert router_z_loss(router_reference(logits, 2).lse).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda lg: router_z_loss(router_reference(lg, 2).lse), (logits,))
    assert torch.autograd.gradcheck(
        lambda lg: load_balancing_loss(counts, router_reference(lg, 2).prob_sums, 6, 2), (logits,))
    assert router_z_loss(torch.randn(3).bfloat16()).dtype == torch.float32


def test_load_balancing_loss_of_float64_statistics_is_exact_in_float64():
    # was: the dispatch fractions counts / (N·k) were rounded to fp32 before the fp64 product, so the fp64 loss was
    # off by ~1e-8 (7/30 has no exact fp32 value)
    counts = torch.tensor([7, 23], dtype=torch.int32)
    prob_sums = torch.tensor([4.0, 11.0], dtype=torch.float64)
    want = 2 * (7 / 30 * 4.0 / 15 + 23 / 30 * 11.0 / 15)
    got = load_balancing_loss(counts, prob_sums, 15, 2)
    assert got.dtype == torch.float64
    assert abs(got.item() - want) < 1e-15


def test_expert_capacity_rule():
    assert expert_capacity(100, 8, 2, 1.25, 4) == 32  # ceil(100·2/8·1.25)
    assert expert_capacity(10, 8, 1, 1.0, 4) == 4  # min_capacity
    assert expert_capacity(10, 1, 1, 2.0, 4) == 10  # never more than N


def test_expert_capacity_is_the_exact_ceiling_of_the_factor_as_written():
    # was: N·k/E·factor in floating point, so 100·1/2·1.1 = 55.00000000000001 gave 56 rows where the rule gives 55
    assert expert_capacity(100, 2, 1, 1.1, 0) == 55
    assert expert_capacity(180, 4, 2, 1.1, 0) == 99
    assert expert_capacity(102, 2, 1, 1.1, 0) == 57  # ceil(56.1)
    assert expert_capacity(100, 4, 2, 1e-1, 0) == 5


def test_bad_arguments_raise_clear_errors():
    logits = _logits(4, 3)
    with pytest.raises(MoEKernelError, match="top-k"):
        route(logits, 4)
    with pytest.raises(MoEKernelError, match="score"):
        route(logits, 1, score="relu")
    with pytest.raises(MoEKernelError, match="backend"):
        route(logits, 1, backend="cuda")
    plan = plan_dispatch(route(logits, 1).topk_idx, 3)
    with pytest.raises(MoEKernelError, match="combine input"):
        combine(torch.zeros(plan.num_rows + 1, 2), plan, torch.ones(4, 1))


@pytest.mark.parametrize("call,match", [
    # were read by truth value: renormalize="no" renormalised, check_ids=0 skipped the id check
    (lambda logits: route(logits, 2, renormalize="no"), r"renormalize must be True, False or None, got 'no'"),
    (lambda logits: route(logits, 2, renormalize=1), r"renormalize must be True, False or None, got 1"),
    (lambda logits: plan_dispatch(torch.tensor([[0], [5]]), 3, check_ids=0),
     r"check_ids must be True or False, got 0"),
])
def test_boolean_arguments_refuse_other_values(call, match):
    with pytest.raises(MoEKernelError, match=match):
        call(_logits(4, 3))


def _expected_topk(logits: torch.Tensor, k: int) -> list:
    """Top-k by plain Python sorting: highest logit first, lowest index on ties, NaN ranked as -inf."""
    rank = [[(-(v if v == v else -math.inf), i) for i, v in enumerate(row)] for row in logits.tolist()]
    return [[i for _, i in sorted(row)[:k]] for row in rank]


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_router_picks_distinct_experts_when_logits_are_minus_inf(score):
    inf = float("inf")
    logits = torch.tensor([[0.0, 1.0, -inf, -inf], [-inf, 2.0, -inf, 0.5], [-inf, -inf, -inf, 3.0]], device=DEVICE)
    for backend in ("triton", "reference"):
        out = route(logits, 3, score=score, backend=backend)
        assert out.topk_idx.tolist() == _expected_topk(logits.cpu(), 3) == [[1, 0, 2], [1, 3, 0], [3, 0, 1]]
        assert out.counts.tolist() == [3, 3, 1, 2]
    _check_router(logits, 3, score, True)
    _check_router(logits, 4, score, False)


def test_router_ties_go_to_the_lowest_expert_id_on_both_backends():
    for backend in ("triton", "reference"):
        assert route(torch.zeros(1, 6, device=DEVICE), 3, backend=backend).topk_idx.tolist() == [[0, 1, 2]]
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(-2, 3, (64, 8), generator=g).float().to(DEVICE)  # 5 values over 8 experts: many ties
    for backend in ("triton", "reference"):
        assert route(logits, 3, backend=backend).topk_idx.tolist() == _expected_topk(logits.cpu(), 3)
    _check_router(logits, 3, "softmax", True)
    _check_router(logits, 2, "sigmoid", False)
    half = _logits(512, 16, seed=7).bfloat16()  # bf16 rounding makes ties common
    assert torch.equal(route(half, 2, backend="triton").topk_idx, route(half, 2, backend="reference").topk_idx)


def test_reference_router_top_k_is_the_stable_order_for_every_k_with_ties_inside_and_at_the_boundary():
    # the reference picks with torch.topk (its order among equal values is unspecified) and fixes the tie order
    g = torch.Generator().manual_seed(3)
    inf, nan = float("inf"), float("nan")
    logits = torch.randint(-2, 3, (200, 7), generator=g).float()  # 5 values over 7 experts: ties everywhere
    logits[:20] = logits[:20, :1]  # rows of one repeated value
    logits[20:40, ::2] = -inf
    logits[40:50, 1::3] = inf
    logits[50:60, 2] = nan
    for k in range(1, 8):
        assert router_reference(logits, k).topk_idx.tolist() == _expected_topk(logits, k), k


def test_router_ranks_nan_logits_as_minus_inf_on_both_backends():
    logits = _logits(6, 5)
    logits[0, 0] = logits[2, 3] = logits[2, 4] = float("nan")
    for backend in ("triton", "reference"):
        assert route(logits, 5, backend=backend).topk_idx.tolist() == _expected_topk(logits.cpu(), 5)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter
def test_router_lse_of_an_infinite_row_is_torch_logsumexp_on_both_backends():
    inf = float("inf")
    logits = _logits(4, 5)
    logits[0] = -inf  # every expert masked out
    logits[1, 2] = inf
    expected = torch.logsumexp(logits.cpu(), dim=-1)  # [-inf, inf, finite, finite]
    for backend in ("triton", "reference"):
        out = route(logits, 2, backend=backend)
        assert out.lse.cpu()[:2].tolist() == [-inf, inf], backend
        torch.testing.assert_close(out.lse.cpu(), expected)
        torch.testing.assert_close(out.gates.cpu(), route(logits, 2, backend="reference").gates.cpu(), equal_nan=True)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter
@pytest.mark.parametrize("renormalize", [True, False])
def test_sigmoid_router_gradient_without_the_z_loss_is_finite_for_infinite_logits(renormalize):
    """Sigmoid gates of a row of -inf logits (every expert masked) or with a +inf logit are finite, and so is their
    gradient when the lse (z-loss) is unused: its NaN softmax must not enter the backward then."""
    inf = float("inf")
    logits = torch.tensor([[-inf, -inf, -inf, -inf], [0.5, -inf, 1.0, -inf], [inf, 0.0, 1.0, 2.0]], device=DEVICE)
    grads = []
    for backend in ("triton", "reference"):
        lg = logits.clone().requires_grad_(True)
        out = route(lg, 2, score="sigmoid", renormalize=renormalize, backend=backend)
        grads.append(torch.autograd.grad(out.gates.sum() + out.prob_sums.sum(), lg)[0])
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter's sigmoid(-120)
def test_renormalized_sigmoid_gates_are_zero_when_the_selected_mass_underflows():
    logits = torch.full((2, 4), -120.0, device=DEVICE)
    logits[1] = _logits(1, 4)[0]
    gates = {b: route(logits, 2, score="sigmoid", backend=b).gates for b in ("triton", "reference")}
    assert gates["reference"][0].tolist() == [0.0, 0.0]
    p = torch.sigmoid(logits[1]).topk(2).values
    torch.testing.assert_close(gates["reference"][1], p / p.sum())
    torch.testing.assert_close(gates["triton"], gates["reference"])


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_plan_dispatch_rejects_bad_expert_ids_and_sizes(backend):
    ids = torch.tensor([[0, 1], [1, 2]], device=DEVICE)
    for bad_ids, num_experts, match in [
        (torch.tensor([[0, -1], [1, 2]], device=DEVICE), 3, r"topk_idx .*\[-1, 2\].*\[0, 2\]"),
        (ids, 2, r"topk_idx .*\[0, 1\] for num_experts=2"),
        (ids, 0, "num_experts must be an int >= 1"),
        (ids.float(), 3, "topk_idx must hold integer expert ids"),
    ]:
        with pytest.raises(MoEKernelError, match=match):
            plan_dispatch(bad_ids, num_experts, backend=backend)
    with pytest.raises(MoEKernelError, match="capacity must be an int"):
        plan_dispatch(ids, 3, 2.5, backend=backend)


def test_triton_combine_ignores_the_gate_of_a_dropped_slot():
    idx = torch.tensor([[0, 1], [0, 1], [0, 1]], dtype=torch.int32, device=DEVICE)
    plan = plan_dispatch(idx, 2, 2, backend="reference")
    gates = torch.rand(3, 2, device=DEVICE)
    gates[plan.dest < 0] = float("nan")  # token 2 lost both slots
    y = torch.randn(plan.num_rows, 4, device=DEVICE)
    out = combine(y, plan, gates, backend="triton")
    assert out[2].tolist() == [0.0] * 4
    torch.testing.assert_close(out, combine(y, plan, gates, backend="reference"))


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_permute_and_combine_refuse_tensors_on_another_device_than_the_plan(backend):
    other = "meta" if DEVICE == "cpu" else "cpu"  # a device the kernels cannot read together with DEVICE's
    plan = plan_dispatch(torch.tensor([[0, 1], [1, 0]], dtype=torch.int32, device=DEVICE), 2, backend="reference")
    y, gates = torch.zeros(4, 3, device=DEVICE), torch.ones(2, 2, device=DEVICE)
    with pytest.raises(MoEKernelError, match=f"permute input is on {other} but the dispatch plan is on {DEVICE}"):
        permute(torch.zeros(2, 3, device=other), plan, backend=backend)
    with pytest.raises(MoEKernelError, match=f"combine input is on {other} but the dispatch plan is on {DEVICE}"):
        combine(y.to(other), plan, gates, backend=backend)
    with pytest.raises(MoEKernelError, match=f"gates are on {other} but the dispatch plan is on {DEVICE}"):
        combine(y, plan, gates.to(other), backend=backend)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # token 0's gate gradient: 0 · inf
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_combine_of_a_dropped_slot_reads_no_expert_row(backend):
    """A token whose slots were all dropped gets zeros even when an expert row is inf/NaN (an fp16 overflow)."""
    idx = torch.tensor([[0, 1], [0, 1], [0, 1]], dtype=torch.int32, device=DEVICE)
    plan = plan_dispatch(idx, 2, 2, backend="reference")
    y = torch.randn(plan.num_rows, 3, device=DEVICE)
    y[0], y[1, 2] = float("inf"), float("nan")
    y.requires_grad_(True)
    gates = torch.rand(3, 2, device=DEVICE, requires_grad=True)
    out = combine(y, plan, gates, backend=backend)
    assert out[2].tolist() == [0.0] * 3  # token 2 lost both slots
    out[2].sum().backward()
    assert gates.grad[2].tolist() == [0.0, 0.0] and (y.grad == 0).all()


def test_combine_with_zero_features():
    idx = torch.tensor([[0, 1], [1, 0]], dtype=torch.int32, device=DEVICE)
    plan = plan_dispatch(idx, 2, backend="reference")
    for backend in ("triton", "reference"):
        assert combine(torch.zeros(plan.num_rows, 0, device=DEVICE), plan, torch.rand(2, 2, device=DEVICE),
                       backend=backend).shape == (2, 0)


def test_triton_functions_refuse_double_backward():
    logits = _logits(5, 4).requires_grad_(True)
    routed = route(logits, 2, backend="triton")
    plan = plan_dispatch(routed.topk_idx, 4, backend="triton")
    x = torch.randn(5, 3, device=DEVICE, requires_grad=True)
    rows = permute(x, plan, backend="triton")
    out = combine(rows * 2.0, plan, routed.gates, backend="triton")
    for wrt in (logits, x):
        (grad,) = torch.autograd.grad(out.square().sum(), wrt, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            grad.sum().backward()


def test_argument_types_and_capacity_rule_inputs_are_checked():
    logits = _logits(4, 3)
    for k in (2.0, True):
        with pytest.raises(MoEKernelError, match="top-k must be an int"):
            route(logits, k)
    with pytest.raises(MoEKernelError, match="num_experts must be an int >= 1"):
        expert_capacity(10, 0, 2, 1.25)
    for factor in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(MoEKernelError, match="capacity_factor must be a finite number > 0"):
            expert_capacity(10, 4, 2, factor)


def test_triton_guards_use_the_interpreter_setting_seen_at_import():
    """Setting TRITON_INTERPRET after the import cannot enable the interpreter: the packages' own errors say so."""
    script = """
import os, torch
import t2t_kernels.gradproj as gp, t2t_kernels.moe as moe
os.environ["TRITON_INTERPRET"] = "1"
try:
    moe.route(torch.zeros(2, 3), 1, backend="triton")
except moe.MoEKernelError as e:
    print("moe:", e)
try:
    gp.gram(torch.ones(2, 4), force_triton=True)
except gp.GradProjInputError as e:
    print("gradproj:", e)
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "moe: backend='triton' cannot run on cpu" in proc.stdout
    assert "gradproj: force_triton on a cpu tensor needs the Triton interpreter" in proc.stdout


@pytest.mark.skipif(DEVICE != "cuda" or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernels_run_on_the_tensors_device_not_the_current_one():
    logits = _logits(37, 5).to("cuda:1")
    x = torch.randn(37, 8, device="cuda:1", requires_grad=True)
    with torch.cuda.device(0):
        results = []
        for backend in ("triton", "reference"):
            xb = x.detach().clone().requires_grad_(True)
            routed = route(logits, 2, backend=backend)
            plan = plan_dispatch(routed.topk_idx, 5, 10, backend=backend)
            out = combine(permute(xb, plan, backend=backend) * 2.0, plan, routed.gates, backend=backend)
            results.append((out, *torch.autograd.grad(out.square().sum(), [xb])))
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _run_tiny_moe_benchmark(setup: str) -> subprocess.CompletedProcess:
    """benchmarks/moe.py at N=64, E=4, d=8, k=1 in a fresh interpreter after the Python `setup`; asserts it exits 0."""
    script = setup + """
sys.argv = ["moe.py", "--n", "64", "--e", "4", "--d", "8", "--k", "1", "--repeats", "1"]
import runpy
runpy.run_path("benchmarks/moe.py", run_name="__main__")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_moe_benchmark_runs_when_importing_deepspeed_fails_otherwise():
    """A DeepSpeed wheel that is there but breaks on import (here a RuntimeError, as an accelerator or version
    check raises) must not take our rows with it on the one-try GPU pass."""
    script = """
import sys
class BrokenDeepSpeed:
    def find_spec(self, name, path=None, target=None):
        if name == "deepspeed" or name.startswith("deepspeed."):
            raise RuntimeError("accelerator check failed")
sys.meta_path.insert(0, BrokenDeepSpeed())
sys.modules.pop("deepspeed", None)
"""
    proc = _run_tiny_moe_benchmark(script)
    assert "DeepSpeed is not importable (RuntimeError: accelerator check failed)" in proc.stdout, proc.stdout
    assert any(line.startswith("| 64 | 4 | 8 | 1 |") for line in proc.stdout.splitlines()), proc.stdout


def test_moe_benchmark_runs_without_deepspeed():
    """The GPU pass runs benchmarks/moe.py even when the peers' wheels are missing: DeepSpeed's columns are then
    skipped, and our rows (with the Triton-vs-reference error on a GPU) still print."""
    script = """
import sys
sys.modules["deepspeed"] = None  # as if it were not installed
"""
    proc = _run_tiny_moe_benchmark(script)
    assert "DeepSpeed is not importable" in proc.stdout
    assert any(line.startswith("| 64 | 4 | 8 | 1 |") for line in proc.stdout.splitlines()), proc.stdout


def test_load_balancing_loss_refuses_mismatched_statistics():
    # were broadcast into a wrong loss: E·Σ f_e·P_e needs one P_e per expert (counts [4] with prob_sums [1] gave 2.0)
    counts = torch.tensor([2, 2, 2, 2])
    for prob_sums in (torch.tensor([2.0]), torch.ones(4, 1), torch.ones(3)):
        with pytest.raises(MoEKernelError, match=r"counts and prob_sums as 1-D tensors of one length"):
            load_balancing_loss(counts, prob_sums, 4, 2)
    with pytest.raises(MoEKernelError, match=r"1-D tensors of one length E >= 1 .* got \(2, 2\) and \(2, 2\)"):
        load_balancing_loss(torch.ones(2, 2), torch.ones(2, 2), 4, 2)
    with pytest.raises(MoEKernelError, match="needs k, the top-k of the routing, an int >= 1, got 0"):  # was inf
        load_balancing_loss(counts, torch.ones(4), 4, 0)
    # uniform routing: f_e = 1/E, P_e = 1/E, so the loss is E · E · (1/E²) = 1
    assert load_balancing_loss(counts, torch.ones(4), 4, 2).item() == pytest.approx(1.0)


@pytest.mark.parametrize("args,match", [
    # were capacities 10 (k 5 of 4 experts), 1 (k 0) and -3 (a negative token count)
    ((10, 4, 5, 1.0, 1), r"top-k must be an int with 1 <= k <= num_experts \(4\), got k=5"),
    ((10, 4, 0, 1.0, 1), r"top-k must be an int with 1 <= k <= num_experts \(4\), got k=0"),
    ((-3, 4, 1, 1.0, 1), r"num_tokens must be an int >= 0, got -3"),
    # were a TypeError from Fraction or a comparison that named no argument, or a capacity that is no int
    ((10.0, 4, 2, 1.25, 4), r"num_tokens must be an int >= 0, got 10.0"),
    ((True, 4, 1, 1.0, 0), r"num_tokens must be an int >= 0, got True"),  # was the capacity True
    ((10, 4.0, 2, 1.25, 4), r"num_experts must be an int >= 1, got 4.0"),
    ((10, 4, 2, "1.25", 4), r"capacity_factor must be a finite number > 0, got '1.25'"),
    ((10, 4, 2, 1.25, None), r"min_capacity must be an int >= 0, got None"),
    ((10, 4, 2, 1.0, 7.5), r"min_capacity must be an int >= 0, got 7.5"),  # was the capacity 7.5
])
def test_expert_capacity_refuses_arguments_out_of_range_or_of_another_type(args, match):
    with pytest.raises(MoEKernelError, match=match):
        expert_capacity(*args)


def test_auto_backend_on_cuda_without_triton_is_an_error_not_a_fallback(monkeypatch):
    """was: backend='auto' on a CUDA device silently ran the PyTorch reference when Triton failed to import (the
    gradproj kernels refuse that case); the dispatch rule is checked on device objects, so this runs on CPU."""
    import t2t_kernels.moe as moe

    monkeypatch.setattr(moe, "_TRITON_IMPORT_ERROR", ImportError("No module named 'triton'"))
    with pytest.raises(MoEKernelError, match=r"backend='auto' runs the Triton kernels on cuda:0, but they failed to "
                                             r"import \(No module named 'triton'\).*backend='reference'"):
        moe._use_triton("auto", torch.device("cuda", 0))
    assert moe._use_triton("reference", torch.device("cuda", 0)) is False  # the opt-in stays available
    assert moe._use_triton("auto", torch.device("cpu")) is False  # the reference off CUDA, as before
    monkeypatch.setattr(moe, "_TRITON_IMPORT_ERROR", None)
    assert moe._use_triton("auto", torch.device("cuda", 0)) is True


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_routing_ops_refuse_non_float_and_non_tensor_inputs(backend):
    """were: complex logits, rows, expert outputs or gates failed in Triton with KeyError('complex64'), and the
    reference router dropped the imaginary part; a list failed with an AttributeError."""
    logits = _logits(6, 4)
    plan = plan_dispatch(route(logits, 2, backend="reference").topk_idx, 4, 3, backend=backend)
    x, gates = torch.randn(6, 5, device=DEVICE), torch.rand(6, 2, device=DEVICE)
    y = torch.randn(plan.num_rows, 5, device=DEVICE)
    cases = [
        (lambda: route(logits.to(torch.complex64), 2, backend=backend), r"router logits must be a float tensor"),
        (lambda: route(logits.tolist(), 2, backend=backend), "router logits must be a torch.Tensor, got list"),
        (lambda: plan_dispatch([[0, 1]], 4, backend=backend), "topk_idx must be a torch.Tensor .* got list"),
        (lambda: permute(x.to(torch.complex64), plan, backend=backend), "permute input must be a float tensor"),
        (lambda: permute(x, plan._asdict(), backend=backend), "plan must be the DispatchPlan .* got dict"),
        (lambda: combine(y.to(torch.complex64), plan, gates, backend=backend), "combine input must be a float tensor"),
        (lambda: combine(y, plan, gates.to(torch.complex64), backend=backend),
         r"gates must be a float tensor, one of \['torch.float16', .*got dtype torch.complex64"),
        (lambda: combine(y, plan, gates.tolist(), backend=backend), "gates must be a torch.Tensor, got list"),
    ]
    for call, match in cases:
        with pytest.raises(MoEKernelError, match=match):
            call()


def _sparse_zeros(tmp_path, name: str, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A zero-filled [size] tensor in a sparse memory-mapped file (only the pages touched exist)."""
    path = tmp_path / name
    with open(path, "wb") as handle:
        handle.truncate(size * torch.tensor([], dtype=dtype).element_size())
    return torch.from_file(str(path), shared=True, size=size, dtype=dtype)


@pytest.mark.skipif(DEVICE == "cuda", reason="its [3, 2^30] histograms lie in sparse files on CPU (28 GiB on a GPU)")
def test_dispatch_kernels_address_histogram_rows_past_2_31_elements(tmp_path):
    """The per-block histograms [blocks, E] pass 2^31 elements at the promised sizes (E = 16384 experts, BLOCK_A = 8,
    from N·k = 2^20 assignments), so a block's row offset (block · E) must be int64: in int32 it wrapped and the
    kernels wrote below the buffer (a segfault here). Launched directly over E = 2^30 experts, so that the third
    block's row starts at 2^31, with tiles of 2 experts (the ids are 0 and 1: experts past them stay empty)."""
    from t2t_kernels.moe.dispatch import dispatch_dest_kernel, dispatch_rank_kernel, dispatch_scan_kernel

    num_experts, block_a, num_blocks, capacity = 2 ** 30, 4, 3, 5
    idx = torch.tensor([[0, 1], [1, 0], [0, 1], [0, 0], [1, 1], [0, 1]], dtype=torch.int32)  # N = 6, k = 2
    n, k = idx.shape
    hist, block_offsets = (_sparse_zeros(tmp_path, name, num_blocks * num_experts, torch.int32)
                           for name in ("hist.bin", "block_offsets.bin"))
    offsets = _sparse_zeros(tmp_path, "offsets.bin", num_experts + 1, torch.int32)
    local_rank, counts, kept = torch.empty(n * k, dtype=torch.int32), torch.zeros(2, dtype=torch.int32), torch.zeros(
        2, dtype=torch.int32)
    dest, row_src = torch.empty(n, k, dtype=torch.int32), torch.full((n * k,), -1, dtype=torch.int32)
    dispatch_rank_kernel[(num_blocks,)](idx, local_rank, hist, n, num_experts, K=k, BLOCK_A=block_a, BLOCK_E=2)
    dispatch_scan_kernel[(1,)](hist, block_offsets, counts, kept, offsets, num_blocks, num_experts, capacity,
                               BLOCK_B=2, BLOCK_E=2)
    dispatch_dest_kernel[(num_blocks,)](idx, local_rank, block_offsets, offsets, dest, row_src, n, num_experts,
                                        capacity, K=k, BLOCK_A=block_a)
    # slot-major blocks of 4 assignments: experts [0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]
    assert [hist[b * num_experts:b * num_experts + 2].tolist() for b in range(num_blocks)] == [[3, 1], [2, 2], [1, 3]]
    assert [block_offsets[b * num_experts:b * num_experts + 2].tolist() for b in range(num_blocks)] == [
        [0, 0], [3, 1], [5, 3]]
    want = dispatch_reference(idx, 2, capacity)
    assert counts.tolist() == want.counts.tolist() and kept.tolist() == want.kept.tolist()
    assert offsets[:2].tolist() == want.segments[:2] and int(offsets[num_experts]) == want.num_rows
    assert torch.equal(dest, want.dest) and torch.equal(row_src[:want.num_rows], want.row_src)
