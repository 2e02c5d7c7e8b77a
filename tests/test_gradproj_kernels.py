"""t2t_kernels.gradproj: Triton Gram/combine against the PyTorch reference, and the reference against the float64
formula.

The Triton kernels run under TRITON_INTERPRET=1 on CPU tensors; with T2T_MTL_TRITON_ON_GPU=1 on a CUDA
machine the same tests run them compiled on the GPU (the references always run on CPU copies).
"""
from __future__ import annotations

import os

import pytest
import torch
import triton

import t2t_kernels.gradproj as gradproj
from t2t_kernels.gradproj import GradProjInputError, combine, gram

ON_GPU = bool(os.environ.get("T2T_MTL_TRITON_ON_GPU")) and torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
cpu_only = pytest.mark.skipif(ON_GPU, reason="exercises the CPU dispatch / interpreter; runs in CI")


def _grads(num_tasks: int, num_params: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Random per-task gradients on the kernel device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_tasks, num_params, generator=gen).to(dtype).to(DEVICE)


def _formula_gram(grads: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    g = grads.double().cpu()
    return torch.stack([g[:, a:b] @ g[:, a:b].T for a, b in zip(offsets, offsets[1:])])


def _reference_gram(grads: torch.Tensor) -> torch.Tensor:
    """The PyTorch reference path on a CPU copy (the oracle), moved back to the kernel device."""
    return gram(grads.cpu(), force_triton=False).to(grads.device)


def _reference_combine(weights, grads: torch.Tensor, **kwargs) -> torch.Tensor:
    return combine(weights, grads.cpu(), force_triton=False, **kwargs).to(grads.device)


@pytest.mark.parametrize("num_tasks,num_params", [(2, 1), (3, 1000), (7, 257), (16, 4096), (17, 333), (33, 100),
                                                  (64, 130)])
def test_reference_gram_and_combine_match_formula(num_tasks, num_params):
    g = _grads(num_tasks, num_params).cpu()
    torch.testing.assert_close(gram(g).double(), _formula_gram(g, [0, num_params])[0], rtol=1e-5, atol=1e-4)
    w = torch.randn(num_tasks)
    torch.testing.assert_close(combine(w, g).double(), w.double() @ g.double(), rtol=1e-5, atol=1e-5)




def test_float64_gradients_are_summed_in_float64():
    # 1 + 2^-30 is 1.0 in fp32: an fp32 accumulation would return 1.0 for its square and a zero for the difference
    x = 1 + 2 ** -30
    g = torch.tensor([[x, 1.0], [1.0, 0.0]], dtype=torch.float64)
    out = gram(g)
    assert out.dtype == torch.float64 and out[0, 0].item() == x * x + 1.0 and out[0, 1].item() == x
    combined = combine([1.0, -1.0], g)
    assert combined.dtype == torch.float64 and combined.tolist() == [x - 1.0, 1.0]

@pytest.mark.parametrize("num_tasks", [2, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_reference_gram_of_long_rows_keeps_fp32_accuracy(num_tasks, dtype):
    """was: for T = 2 and T > 8 the reference summed each segment in one BLAS call, which OpenBLAS accumulates
    nearly serially for a few rows: at P = 4M in fp32 the Gram's entries were ~1e-3 off (relative to the norms), where
    the fp32 accumulation the kernels promise keeps them within ~1e-5."""
    from t2t_kernels.gradproj import reference

    p = 1 << 22
    g = torch.randn(num_tasks, p, generator=torch.Generator().manual_seed(num_tasks)).to(dtype)
    got = reference.gram_reference(g, [0, p])[0].double()
    exact = reference.gram_reference(g.double(), [0, p])[0]
    norms = exact.diagonal().sqrt()
    assert ((got - exact).abs() / norms.outer(norms)).max() < 2e-5


@pytest.mark.parametrize("num_tasks", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_reference_column_chunks_and_scale_match_the_formula(monkeypatch, dtype, num_tasks):
    """The reference sums the Gram's columns in blocks and upcasts half inputs in chunks, at sizes no test reaches
    at full scale, and builds a T = 2 Gram from a matrix-vector product and a dot (its corner mirrored: exactly
    symmetric); shrunk so that the chunks cut the segments unevenly, its Grams and scaled combines against the fp64
    formula (the Triton tests compare with the reference, so it must be right by itself)."""
    from t2t_kernels.gradproj import reference

    monkeypatch.setattr(reference, "_GRAM_CHUNK", 7)
    monkeypatch.setattr(reference, "_GRAM_CHUNK_TWO_TASKS", 3)
    monkeypatch.setattr(reference, "_UPCAST_CHUNK", 5)
    g = _grads(num_tasks, 61, dtype).cpu()
    offsets = [0, 3, 20, 20, 61]
    grams = gram(g, offsets, force_triton=False)
    torch.testing.assert_close(grams.double(), _formula_gram(g, offsets), rtol=1e-5, atol=1e-5)
    assert num_tasks != 2 or torch.equal(grams, grams.transpose(1, 2))
    w = torch.randn(4, num_tasks, generator=torch.Generator().manual_seed(1))
    want = 0.5 * torch.cat([w[k].double() @ g[:, a:b].double() for k, (a, b) in enumerate(zip(offsets, offsets[1:]))])
    for out_dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        out = combine(w, g, out=torch.zeros(61, dtype=out_dtype), scale=0.5, segment_offsets=offsets,
                      force_triton=False)
        torch.testing.assert_close(out.double(), want.to(out_dtype).double(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("num_tasks,num_params,num_splits", [(1, 700, 2), (2, 5, 1), (2, 4097, 2), (3, 1000, 3),
                                                             (4, 2100, 1), (5, 4099, 2), (8, 1025, 3), (12, 777, 4),
                                                             (16, 300, 2), (17, 1500, 1), (40, 257, 2), (64, 130, 1)])
def test_triton_gram_matches_reference_fp32(num_tasks, num_params, num_splits):
    g = _grads(num_tasks, num_params, seed=num_tasks)
    out = gram(g, force_triton=True, num_splits=num_splits)
    assert out.shape == (num_tasks, num_tasks) and out.dtype == torch.float32
    torch.testing.assert_close(out, _reference_gram(g), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_tasks", [6, 12])  # a folded tile (T < 16) and a padded one
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_gram_half_inputs_accumulate_in_fp32(dtype, num_tasks):
    g = _grads(num_tasks, 3001, dtype)
    expected = _formula_gram(g, [0, 3001])[0].float()  # exact products of the half values, fp64 sums
    torch.testing.assert_close(gram(g, force_triton=True, num_splits=3).cpu(), expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(_reference_gram(g).cpu(), expected, rtol=1e-4, atol=1e-3)


def test_triton_gram_is_deterministic_and_split_count_only_changes_rounding():
    g = _grads(9, 5000)
    first = gram(g, force_triton=True, num_splits=4)
    assert torch.equal(first, gram(g, force_triton=True, num_splits=4))
    torch.testing.assert_close(first, gram(g, force_triton=True, num_splits=1), rtol=1e-5, atol=1e-4)


def test_triton_gram_strided_rows():
    base = _grads(5, 1200)
    g = base[:, 100:1100]  # row stride 1200, unit column stride
    torch.testing.assert_close(gram(g, force_triton=True, num_splits=2).cpu(),
                               _formula_gram(g, [0, 1000])[0].float(), rtol=1e-4, atol=1e-4)


def test_segmented_gram_triton_and_reference():
    g = _grads(5, 1000)
    offsets = [0, 10, 10, 600, 1000]  # includes an empty segment
    expected = _formula_gram(g, offsets).float()
    for out in (gram(g.cpu(), offsets), gram(g, torch.tensor(offsets), force_triton=True, num_splits=2)):
        assert out.shape == (4, 5, 5)
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(expected[1]) == 0


@pytest.mark.parametrize("num_tasks,num_params", [(2, 3), (3, 1000), (7, 2049), (33, 300), (64, 70)])
def test_triton_combine_matches_reference(num_tasks, num_params):
    g = _grads(num_tasks, num_params)
    w = torch.randn(num_tasks, dtype=torch.float64)
    torch.testing.assert_close(combine(w, g, force_triton=True), _reference_combine(w, g), rtol=1e-4, atol=1e-5)


def test_triton_combine_into_flat_buffer_with_scale():
    g = _grads(4, 1500)
    w = [0.5, -1.0, 2.0, 0.25]
    flat = torch.full((1500,), 7.0, device=DEVICE)
    out = combine(w, g, out=flat, scale=0.125, force_triton=True)
    assert out.data_ptr() == flat.data_ptr()
    torch.testing.assert_close(flat.cpu(), 0.125 * (torch.tensor(w) @ g.cpu()), rtol=1e-5, atol=1e-6)
    bf16 = torch.zeros(1500, dtype=torch.bfloat16, device=DEVICE)
    combine(w, g.bfloat16(), out=bf16, scale=2.0, force_triton=True)
    expected = (2.0 * (torch.tensor(w, dtype=torch.float64) @ g.bfloat16().double().cpu())).bfloat16()
    torch.testing.assert_close(bf16.cpu(), expected, rtol=1e-2, atol=1e-2)


def test_segmented_combine_uses_each_segments_weights():
    g = _grads(3, 900)
    offsets = [0, 300, 300, 900]
    w = torch.randn(3, 3)
    cpu = g.cpu()
    expected = torch.cat([w[0] @ cpu[:, :300], w[2] @ cpu[:, 300:]])
    for grads, force in ((cpu, False), (g, True)):
        out = combine(w, grads, out=torch.empty(900, device=grads.device), segment_offsets=offsets,
                      force_triton=force)
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-5)


@cpu_only
def test_env_switch_routes_cpu_tensors_to_triton(monkeypatch):
    import sys

    gram_module = sys.modules["t2t_kernels.gradproj.gram"]  # the package attribute `gram` is the function
    calls = []
    real = gram_module.gram_triton
    monkeypatch.setattr(gram_module, "gram_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = _grads(3, 100)
    gram(g)
    assert not calls
    monkeypatch.setenv(gradproj.FORCE_TRITON_ENV, "1")
    torch.testing.assert_close(gram(g), _formula_gram(g, [0, 100])[0].float(), rtol=1e-4, atol=1e-4)
    assert calls == [1]


@cpu_only
@pytest.mark.parametrize("call,match", [
    (lambda: gram(torch.randn(10)), "2-D tensor"),
    (lambda: gram(torch.randn(3, 10, dtype=torch.float64).int()), "dtype"),
    (lambda: gram(torch.randn(65, 10), force_triton=True), "at most 64 tasks"),
    (lambda: gram(torch.randn(3, 10), [0, 5]), "end at P = 10"),
    (lambda: gram(torch.randn(3, 10), [0, 6, 4, 10]), "non-decreasing"),
    (lambda: combine(torch.randn(4), torch.randn(3, 10)), r"weights must have shape \[3\]"),
    (lambda: combine(torch.randn(3), torch.randn(3, 10), out=torch.empty(9)), "P = 10"),
    (lambda: combine(torch.randn(2, 3), torch.randn(3, 10), segment_offsets=[0, 3, 6, 10]), r"\[3, 3\]"),
    (lambda: gram(torch.randn(3, 10), force_triton=True, num_splits=0), "num_splits must be an int >= 1"),
    (lambda: gram(torch.randn(3, 10), num_splits=-1), "num_splits must be an int >= 1"),
    (lambda: gram(torch.randn(3, 10), num_splits=2.0), "num_splits must be an int >= 1"),
    (lambda: gram(torch.randn(3, 10), [0, 5.7, 10]), "segment_offsets must be a flat sequence of ints"),
    (lambda: gram(torch.randn(3, 10), [[0, 5], [10]]), "segment_offsets must be a flat sequence of ints"),
    (lambda: gram(torch.randn(3, 2), torch.tensor([False, True])), "segment_offsets must be a 1-D integer tensor"),
    (lambda: combine(torch.randn(3), torch.randn(3, 10), scale="2", force_triton=True), "scale must be a real number"),
    (lambda: combine(torch.randn(3), torch.randn(3, 10), scale=True), "scale must be a real number"),
    (lambda: combine(torch.randn(3), torch.randn(3, 10), out=[0.0] * 10), "out must be a contiguous 1-D float buffer"),
    # were read by truth value: force_triton="no" forced the Triton path
    (lambda: gram(torch.randn(3, 10), force_triton="no"), r"force_triton must be True, False or None .* got 'no'"),
    (lambda: combine(torch.randn(3), torch.randn(3, 10, dtype=torch.float64), force_triton=0),
     r"force_triton must be True, False or None .* got 0"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(GradProjInputError, match=match):
        call()


def test_triton_kernels_address_rows_past_2_31_elements(tmp_path):
    """Row 2 starts at element 2·(2^30 + 64) > 2^31: the row offsets must be int64 (int32 products wrap).

    On CPU the [3, P] view lies in a sparse memory-mapped file (only the touched pages exist); on a GPU the
    4 GiB buffer is allocated."""
    stride, num_params = 2 ** 30 + 64, 300
    size = 2 * stride + num_params
    if ON_GPU:
        storage = torch.zeros(size, dtype=torch.bfloat16, device=DEVICE)
    else:
        path = tmp_path / "sparse.bin"
        with open(path, "wb") as handle:
            handle.truncate(size * 2)
        storage = torch.from_file(str(path), shared=True, size=size, dtype=torch.bfloat16)
    grads = storage.as_strided((3, num_params), (stride, 1))
    values = _grads(3, num_params, torch.bfloat16).cpu()
    grads.copy_(values)
    torch.testing.assert_close(gram(grads, force_triton=True).cpu(), _formula_gram(values, [0, num_params])[0].float(),
                               rtol=1e-4, atol=1e-3)
    weights = [1.0, -2.0, 0.5]
    expected = (torch.tensor(weights, dtype=torch.float64) @ values.double()).bfloat16()
    torch.testing.assert_close(combine(weights, grads, force_triton=True).cpu(), expected, rtol=1e-2, atol=1e-2)


class _GridRecorder:
    """Stands in for a Triton kernel: records each launch grid and runs nothing."""

    def __init__(self):
        self.grids = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.grids.append(tuple(grid))


def test_many_segments_stay_within_the_cuda_grid_limits(monkeypatch):
    """CUDA caps grid dimensions y and z at 65535 blocks; one segment per parameter tensor can pass that, so no
    launch may put the segments there. On a GPU the kernels run; on CPU (70001 interpreted programs would take
    minutes) the launches are recorded instead."""
    num_segments = 70_001
    grads = _grads(2, num_segments)
    offsets = list(range(num_segments + 1))
    if ON_GPU:
        expected = _formula_gram(grads, offsets).float()
        torch.testing.assert_close(gram(grads, offsets).cpu(), expected, rtol=1e-4, atol=1e-4)
        weights = torch.randn(num_segments, 2)
        torch.testing.assert_close(combine(weights, grads, segment_offsets=offsets).cpu(),
                                   (weights * grads.cpu().T).sum(1), rtol=1e-5, atol=1e-5)
        return
    import sys

    recorders = {}
    for module, name in (("gram", "_gram_partial_kernel"), ("gram", "_gram_reduce_kernel"),
                         ("combine", "_combine_kernel")):
        recorders[name] = _GridRecorder()
        monkeypatch.setattr(sys.modules[f"t2t_kernels.gradproj.{module}"], name, recorders[name])
    gram(grads, offsets, force_triton=True)
    combine(torch.ones(num_segments, 2), grads, segment_offsets=offsets, force_triton=True)
    for name, recorder in recorders.items():
        assert recorder.grids and all(max(grid[1:], default=1) <= 65535 for grid in recorder.grids), name


@pytest.mark.parametrize("force", [False, True])
def test_combine_into_a_buffer_that_overlaps_the_grads(force):
    g = _grads(3, 300, seed=4)
    w = torch.tensor([1.0, -2.0, 0.5])
    expected = w.double() @ g.double().cpu()
    out = combine(w, g, out=g[0], force_triton=force)
    assert out.data_ptr() == g.data_ptr()
    torch.testing.assert_close(g[0].double().cpu(), expected, rtol=1e-5, atol=1e-5)
    flat = _grads(3, 300, seed=5).reshape(-1)
    grads = flat[:900].view(3, 300)
    expected = w.double() @ grads.double().cpu()
    combine(w, grads, out=flat[150:450], force_triton=force)  # straddles rows 0 and 1
    torch.testing.assert_close(flat[150:450].double().cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("force", [False, True])
def test_gram_and_combine_return_no_graph_for_inputs_that_require_grad(force):
    g = _grads(3, 200, seed=6).requires_grad_(True)
    w = torch.tensor([0.5, 1.0, -1.0])
    gram_out = gram(g, force_triton=force)
    combined = combine(w, g, force_triton=force)
    assert not gram_out.requires_grad and not combined.requires_grad
    torch.testing.assert_close(gram_out.double().cpu(), _formula_gram(g.detach(), [0, 200])[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(combined.double().cpu(), w.double() @ g.detach().double().cpu(), rtol=1e-5, atol=1e-5)


@cpu_only
def test_triton_path_reads_nothing_back_from_the_device(monkeypatch):
    """On a GPU every value read back from a device tensor (int(), .item(), .tolist()) waits for the device; the
    segment bounds are known on the host, so the Triton path of gram/combine reads nothing back."""
    g = _grads(4, 1000)
    expected_gram, expected_combined = _formula_gram(g, [0, 300, 1000]).float(), torch.ones(4) @ g

    def refuse(*_args, **_kwargs):
        raise AssertionError("a tensor value was read back on the host")

    for name in ("__int__", "__index__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    got_gram = gram(g, [0, 300, 1000], force_triton=True)
    got_combined = combine([1.0] * 4, g, force_triton=True)
    monkeypatch.undo()
    torch.testing.assert_close(got_gram, expected_gram, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_combined, expected_combined, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (the CPU twin is the test above)")
def test_gram_and_combine_do_not_synchronize_the_device():
    g = _grads(4, 1000)
    weights, out = torch.randn(4, device=DEVICE), torch.empty(1000, device=DEVICE)
    gram(g, [0, 300, 1000]), combine(weights, g, out=out)  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gram(g, [0, 300, 1000])
        gram(g)
        combine(weights, g, out=out)
        combine([0.5, 1.0, -1.0, 2.0], g, segment_offsets=None)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device: host weights are copied through pinned memory")
def test_combine_takes_expanded_host_weights_for_device_grads():
    g = _grads(4, 1000)
    weights = torch.tensor([[0.5], [1.0]]).expand(-1, 4)  # stride 0 along the tasks, on the host
    got = combine(weights, g, segment_offsets=[0, 300, 1000])
    expected = torch.cat([0.5 * g[:, :300].sum(0), g[:, 300:].sum(0)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not ON_GPU or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernels_run_on_the_grads_device_not_the_current_one():
    g = _grads(3, 500).to("cuda:1")
    with torch.cuda.device(0):
        torch.testing.assert_close(gram(g).cpu(), _formula_gram(g, [0, 500])[0].float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(combine([1.0, -2.0, 0.5], g).cpu(), torch.tensor([1.0, -2.0, 0.5]) @ g.cpu(),
                                   rtol=1e-5, atol=1e-5)


def test_segmented_combine_grid_stays_within_cuda_limits_at_the_promised_sizes(monkeypatch, tmp_path):
    """CUDA caps grid dimension x at 2^31 - 1 programs. T = 64 tasks over P = 5·10^8 + 599 columns in 600
    segments (one per parameter tensor: a 5·10^8-column embedding and 599 one-column tensors) is within the
    promised sizes (P up to 10^9, T up to 64). The rows share one storage (row stride 0) in a sparse
    memory-mapped file on CPU, where the combine launch is recorded instead of run; on a GPU it runs."""
    big, num_small, num_tasks = 5 * 10 ** 8, 599, 64
    num_params = big + num_small
    offsets = [0, *range(big, num_params + 1)]
    if ON_GPU:
        storage, out = (torch.ones(num_params, dtype=torch.bfloat16, device=DEVICE) for _ in range(2))
    else:
        storage, out = (torch.from_file(str(tmp_path / name), shared=True, size=num_params, dtype=torch.bfloat16)
                        for name in ("grads.bin", "out.bin"))
    grads = storage.as_strided((num_tasks, num_params), (0, 1))
    weights = torch.arange(len(offsets) - 1).remainder(3).add(1).div(num_tasks)[:, None].repeat(1, num_tasks)
    if ON_GPU:  # every row is ones: out = the sum of each segment's weights, k % 3 + 1 (exact in bf16)
        combine(weights, grads, out=out, segment_offsets=offsets)
        assert torch.all(out[:big] == 1)
        torch.testing.assert_close(out[big:].float().cpu(), torch.arange(1, num_small + 1).remainder(3).add(1).float())
        return
    import sys

    recorder = _GridRecorder()
    monkeypatch.setattr(sys.modules["t2t_kernels.gradproj.combine"], "_combine_kernel", recorder)
    combine(weights, grads, out=out, segment_offsets=offsets, force_triton=True)
    assert recorder.grids and all(grid[0] <= 2 ** 31 - 1 for grid in recorder.grids), recorder.grids


@cpu_only
def test_gram_splits_a_long_segment_among_many_short_ones(monkeypatch):
    """Stage 1 runs one program per chunk; a segment per parameter tensor puts one long segment (an embedding)
    among hundreds of short ones, and a segment kept whole in one program serialises the Gram on one SM while
    the others idle. With T = 1 and every entry 1, a stage-1 slot's folded diagonal counts the columns its
    program read; no program may read more than a quarter of P plus one step (the interpreter aims at 4
    programs, a GPU at 4 per SM)."""
    import sys

    gram_module = sys.modules["t2t_kernels.gradproj.gram"]
    long_segment, num_short = 16 * 4096, 15
    num_params = long_segment + num_short
    offsets = [0, *range(long_segment, num_params + 1)]
    workspaces = []
    real_reduce = gram_module._gram_reduce_kernel

    class Spy:
        def __getitem__(self, grid):
            return lambda ws, *args, **kwargs: workspaces.append(ws.clone()) or real_reduce[grid](ws, *args, **kwargs)

    monkeypatch.setattr(gram_module, "_gram_reduce_kernel", Spy())
    out = gram(torch.ones(1, num_params), offsets, force_triton=True)
    torch.testing.assert_close(out, torch.tensor([long_segment] + [1] * num_short, dtype=torch.float32)[:, None, None])
    block_t, block_p, fold = gram_module._block_sizes(1, 4)
    columns = workspaces[0].view(-1, block_t, block_t).diagonal(dim1=1, dim2=2).sum(1)
    assert columns.sum() == num_params
    assert columns.max() <= triton.cdiv(num_params, 4) + block_p * fold, columns.tolist()


@pytest.mark.parametrize("weights", [["a", "b", "c"], [[1.0], [1.0, 2.0], [3.0]], None])
def test_combine_weights_that_are_not_numbers_are_named(weights):
    # were torch's "too many dimensions 'str'", "expected sequence of length 1 at dim 1" and "must be real number,
    # not NoneType"
    with pytest.raises(GradProjInputError, match="weights must be a tensor or a sequence of numbers, one per task"):
        combine(weights, torch.ones(3, 4))


@pytest.mark.parametrize("force", [False, True])
def test_combine_refuses_complex_weights(force):
    """was: a complex weights tensor or NumPy array was cast to float with only torch's warning, its imaginary part
    dropped (a complex Python list was already refused)."""
    import numpy as np

    for weights in (torch.tensor([1 + 1j, 2, 3]), np.array([1 + 1j, 2, 3]), [1 + 1j, 2, 3]):
        with pytest.raises(GradProjInputError, match=r"weights must be a tensor or a sequence of numbers, one per "
                                                     r"task, real, got .*complex"):
            combine(weights, _grads(3, 4), force_triton=force)
    real = np.array([1.0, 2.0, 3.0])  # real arrays and tensors are taken as before
    torch.testing.assert_close(combine(real, _grads(3, 4), force_triton=force).cpu(),
                               (torch.tensor(real).float() @ _grads(3, 4).cpu()), rtol=1e-5, atol=1e-5)


@cpu_only
@pytest.mark.parametrize("value", ["false", "no", "true", " 1"])
def test_force_triton_environment_values_other_than_0_and_1_are_refused(monkeypatch, value):
    """was: read as 'not empty and not 0', so T2T_MTL_GRADPROJ_FORCE_TRITON=false forced the Triton path."""
    monkeypatch.setenv(gradproj.FORCE_TRITON_ENV, value)
    with pytest.raises(GradProjInputError, match=rf"{gradproj.FORCE_TRITON_ENV} must be 1 .*, 0 or unset, got "
                                                 rf"'{value}'"):
        gram(torch.randn(3, 10))
    monkeypatch.setenv(gradproj.FORCE_TRITON_ENV, "0")
    torch.testing.assert_close(gram(torch.eye(2, 3)), torch.eye(2))  # off: the reference


@pytest.mark.parametrize("make", [lambda o: (b for b in o), iter, range])
def test_segment_offsets_given_as_a_generator_or_range(make):
    """was: a generator or iterator of valid boundaries was used up by the int check and then refused as empty
    ('needs K+1 >= 2 boundaries, got []')."""
    g = _grads(3, 10)
    offsets = range(0, 11, 5) if make is range else make([0, 5, 10])
    expected = _formula_gram(g, [0, 5, 10]).float()
    torch.testing.assert_close(gram(g, offsets).cpu(), expected, rtol=1e-5, atol=1e-5)
    w = torch.randn(2, 3)
    offsets = range(0, 11, 5) if make is range else make([0, 5, 10])
    expected = torch.cat([w[0].double() @ g[:, :5].double().cpu(), w[1].double() @ g[:, 5:].double().cpu()])
    torch.testing.assert_close(combine(w, g, segment_offsets=offsets).double().cpu(), expected, rtol=1e-5, atol=1e-6)
