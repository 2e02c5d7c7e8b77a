"""Building micro-batches: the sampler picks the task(s), TaskStreams the rows, the collator pads.

Homogeneous mode (`sampler.next_task()` per micro-batch, identical on every rank) gives one task per
micro-batch; mixed mode (`sampler.sample_tasks(B)`) gives one task per example. With `batching: bucket`,
`bucket_batches` micro-batches' worth of rows are drawn at once (for the same task in homogeneous mode),
sorted by length and cut into micro-batches that are served in a seeded random order, so each batch pads to
similar lengths; the repeats of a row in a draw that spans several epochs of a small task are sorted after every
first copy, so they do not end up side by side in one micro-batch. With a `PackedCollator` (`batching: pack`) the
drawn rows are sorted by decreasing size and cut into packed micro-batches (`t2t_mtl.data.packing.pack_chunks`,
first-fit decreasing); the last rows, which would leave a micro-batch half empty, wait in `leftover` and go first
into the next draw's. The pending micro-batches, the leftover rows and the shuffling RNG are part of `state_dict()`,
so a resumed run continues with exactly the batches the interrupted one would have produced (a resume with a smaller
`micro_batch_size` cuts the saved micro-batches to it; packed ones that no longer fit are packed again).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple, Union

import numpy as np
import torch

from t2t_mtl.data.collator import Seq2SeqCollator
from t2t_mtl.data.packing import PackedCollator, first_fit, pack_chunks
from t2t_mtl.data.streams import TokenizedTask

Chunk = List[Tuple[str, int]]  # (task, row index) pairs of one micro-batch


class BatchBuilder:
    """Produces micro-batch dicts (input_ids, attention_mask, labels, task_ids) plus the task names.

    With a `PackedCollator`, `micro_batch_size` counts packed rows and a micro-batch holds as many examples
    as fit them (each row one task); the dicts then also carry encoder/decoder segment ids.
    """

    def __init__(
        self,
        streams: Mapping[str, TokenizedTask],
        sampler: Any,
        task_streams: Any,
        collator: Union[Seq2SeqCollator, PackedCollator],
        *,
        micro_batch_size: int,
        mode: str = "homogeneous",
        bucket_batches: int = 1,
        seed: int = 0,
    ):
        if mode not in ("homogeneous", "mixed"):
            raise ValueError(f"sampling.mode must be 'homogeneous' or 'mixed', got {mode!r}")
        self.streams = dict(streams)
        self.task_names = list(streams)
        self.task_to_id = {name: i for i, name in enumerate(self.task_names)}
        self.sampler = sampler
        self.task_streams = task_streams
        self.collator = collator
        self.micro_batch_size = micro_batch_size
        self.mode = mode
        self.bucket_batches = max(1, bucket_batches)
        self.rng = np.random.default_rng(seed)
        self.pending: Dict[str, List[Chunk]] = {}
        self.leftover: Dict[str, Chunk] = {}  # packing: drawn rows waiting for the next packed micro-batches
        self.packed = isinstance(collator, PackedCollator)

    # ------------------------------------------------------------------------------------------- chunks
    def _bucket(self, pairs: Chunk) -> List[Chunk]:
        """Sort pairs by (copy, input length, target length), cut into micro-batches, return them in random
        order. `copy` numbers the repeats of a row in a draw that spans more than an epoch of a small task:
        sorted by length alone, the repeats would sit side by side and fill a micro-batch with one example."""
        if self.bucket_batches > 1:
            copies = _copy_numbers(pairs)
            lengths = [(c, self.streams[t].input_lengths[i], self.streams[t].target_lengths[i])
                       for c, (t, i) in zip(copies, pairs)]
            order = sorted(range(len(pairs)), key=lambda k: lengths[k])
            pairs = [pairs[k] for k in order]
        b = self.micro_batch_size
        return self._shuffled([pairs[k:k + b] for k in range(0, len(pairs), b)])

    def _shuffled(self, chunks: List[Chunk]) -> List[Chunk]:
        """`chunks` in a random order of the builder's RNG (a single chunk draws nothing from it)."""
        return [chunks[k] for k in self.rng.permutation(len(chunks))] if len(chunks) > 1 else chunks

    def _draw_pairs(self, key: str, n: int) -> Chunk:
        """The next `n` (task, row) pairs: of task `key` (homogeneous) or of sampled tasks (mixed, key "*")."""
        if self.mode == "homogeneous":
            return [(key, int(i)) for i in self.task_streams.next_indices(key, n)]
        tasks = self.sampler.sample_tasks(n)
        wanted: Dict[str, int] = {}
        for t in tasks:
            wanted[t] = wanted.get(t, 0) + 1
        drawn = {t: iter(self.task_streams.next_indices(t, c)) for t, c in wanted.items()}
        return [(t, int(next(drawn[t]))) for t in tasks]

    def _draw(self, key: str) -> List[Chunk]:
        if self.packed:
            return self._pack(key)
        return self._bucket(self._draw_pairs(key, self.micro_batch_size * self.bucket_batches))

    def _pack_item(self, pair: Tuple[str, int]) -> Tuple[int, int, int]:
        task, i = pair
        stream = self.streams[task]
        return self.collator.item(self.task_to_id[task], stream.input_lengths[i], stream.target_lengths[i])

    def _pack_draw_size(self, key: str) -> int:
        """Rows to draw for `bucket_batches` packed micro-batches, from the mean example sizes."""
        tasks = self.task_names if key == "*" else [key]
        mean_in = float(np.mean([self.streams[t].input_lengths.mean() for t in tasks]))
        mean_tgt = float(np.mean([self.streams[t].target_lengths.mean() for t in tasks]))
        per_row = min(self.collator.input_capacity / max(mean_in, 1.0),
                      self.collator.target_capacity / max(mean_tgt, 1.0))
        return max(1, int(self.micro_batch_size * self.bucket_batches * max(per_row, 1.0)))

    def _pack(self, key: str) -> List[Chunk]:
        """Packed micro-batches from the leftover rows, then newly drawn rows by decreasing size (first-fit
        decreasing), in random order. The leftover rows go first: they all fit together, so the next full
        micro-batch takes every one of them (sorted in with the rest, the smallest could wait forever). A row
        drawn more than once (a draw spanning more than an epoch of a small task) goes into a micro-batch
        holding it already only into room no other row takes (`pack_chunks` keys); its repeats wait longer."""
        c = self.collator
        waiting, drawn = self.leftover.pop(key, []), []
        size = {p: self._pack_item(p) for p in waiting}
        while True:
            new = self._draw_pairs(key, self._pack_draw_size(key))
            size.update((p, self._pack_item(p)) for p in new)
            drawn = sorted(drawn + new, key=lambda p: -(size[p][1] / c.input_capacity + size[p][2] / c.target_capacity))
            pool = waiting + drawn
            chunks, leftover = pack_chunks([size[p] for p in pool], self.micro_batch_size, c.input_capacity,
                                           c.target_capacity, keys=pool)
            if chunks:
                break
        if leftover:
            self.leftover[key] = [pool[k] for k in leftover]
        return self._shuffled([[pool[k] for k in chunk] for chunk in chunks])

    def next_chunk(self) -> Chunk:
        """The (task, row) pairs of the next micro-batch."""
        key = self.sampler.next_task() if self.mode == "homogeneous" else "*"
        queue = self.pending.get(key)
        if not queue:
            queue = self.pending[key] = self._draw(key)
        return queue.pop()

    def next_selected_chunk(self, score: Callable[[Dict[str, torch.Tensor]], torch.Tensor],
                            answer_space_sizes: Mapping[str, int]) -> Chunk:
        """CA-MTL selection: draw the sampler's candidate pool (`candidate_pool()`: b rows per task),
        `score(batch)` it (per-candidate entropy in nats, [b·M]), and return the micro_batch_size candidates
        the sampler's `select()` keeps (highest U first). Needs an `uncertainty` strategy sampler."""
        pool: Chunk = []
        for task, n in self.sampler.candidate_pool().items():
            pool.extend((task, int(i)) for i in self.task_streams.next_indices(task, n))
        entropy = score(self.collate(pool)).detach().float().cpu()
        if entropy.shape != (len(pool),):
            raise ValueError(f"the candidate scorer returned shape {tuple(entropy.shape)}, expected ({len(pool)},)")
        positions: Dict[str, List[int]] = {}
        for k, (task, _) in enumerate(pool):
            positions.setdefault(task, []).append(k)
        per_task = {task: entropy[ks] for task, ks in positions.items()}
        chosen = self.sampler.select(per_task, answer_space_sizes, self.micro_batch_size)
        return [pool[positions[task][i]] for task, i in chosen]

    # ------------------------------------------------------------------------------------------ batches
    def collate(self, chunk: Chunk) -> Dict[str, torch.Tensor]:
        """Fetch the rows of a chunk (grouped per task for Arrow access) and pad them into a batch."""
        by_task: Dict[str, List[int]] = {}
        for pos, (t, _) in enumerate(chunk):
            by_task.setdefault(t, []).append(pos)
        inputs: List[Any] = [None] * len(chunk)
        labels: List[Any] = [None] * len(chunk)
        for t, positions in by_task.items():
            rows = self.streams[t].rows([chunk[p][1] for p in positions])
            for p, x, y in zip(positions, rows["input_ids"], rows["labels"]):
                inputs[p], labels[p] = x, y
        return self.collator(inputs, labels, [self.task_to_id[t] for t, _ in chunk])

    def next_batch(self) -> Dict[str, torch.Tensor]:
        """The next micro-batch dict."""
        return self.collate(self.next_chunk())

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {"pending": {k: [[list(p) for p in c] for c in v] for k, v in self.pending.items()},
                "leftover": {k: [list(p) for p in v] for k, v in self.leftover.items()},
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pending = {k: [[(str(t), int(i)) for t, i in c] for c in v] for k, v in state["pending"].items()}
        self.leftover = {k: [(str(t), int(i)) for t, i in v] for k, v in state.get("leftover", {}).items()}
        self.rng.bit_generator.state = state["rng"]
        self._key_for_mode()
        if self.packed:
            self._repack_changed_chunks()
        else:
            self._cut_oversized_chunks()

    def _mode_keys(self, rows: Chunk) -> Dict[str, Chunk]:
        """`rows` under the queue keys of this mode: "*" (mixed), or each task's rows under the task."""
        if self.mode == "mixed":
            return {"*": list(rows)}
        by_task: Dict[str, Chunk] = {}
        for pair in rows:
            by_task.setdefault(pair[0], []).append(pair)
        return by_task

    def _key_for_mode(self) -> None:
        """Saved micro-batches and waiting rows go under this mode's keys, so a resume that changed
        `sampling.mode` serves them too (a saved mixed micro-batch becomes one per task); the same mode keeps
        every queue as saved."""
        pending: Dict[str, List[Chunk]] = {}
        leftover: Dict[str, Chunk] = {}
        for queue in self.pending.values():
            for chunk in queue:
                for key, rows in self._mode_keys(chunk).items():
                    pending.setdefault(key, []).append(rows)
        for waiting in self.leftover.values():
            for key, rows in self._mode_keys(waiting).items():
                leftover.setdefault(key, []).extend(rows)
        self.pending, self.leftover = pending, leftover

    def _cut_oversized_chunks(self) -> None:
        """Pending micro-batches larger than `micro_batch_size` (a resume with a smaller one, or of a packed run)
        are cut to it, so no micro-batch exceeds the configured size; rows a packed run left waiting become
        micro-batches too. Every saved row is still served."""
        b = self.micro_batch_size
        queues = {key: list(queue) for key, queue in self.pending.items()}
        for key, rows in self.leftover.items():
            queues.setdefault(key, []).append(rows)
        self.pending = {key: [chunk[k:k + b] for chunk in queue for k in range(0, len(chunk), b)]
                        for key, queue in queues.items()}
        self.leftover = {}

    def _repack_changed_chunks(self) -> None:
        """Pending packed micro-batches that no longer fit the rows (a resume with another micro_batch_size or
        max length) go back to the leftover, to be packed again; the others are served as saved."""
        c = self.collator
        for key, queue in self.pending.items():
            keep = []
            for chunk in queue:
                items = [self._pack_item(p) for p in chunk]
                if first_fit(items, self.micro_batch_size, c.input_capacity, c.target_capacity)[1]:
                    self.leftover[key] = self.leftover.get(key, []) + list(chunk)
                else:
                    keep.append(chunk)
            self.pending[key] = keep


def waiting_rows(state: Mapping[str, Any]) -> Chunk:
    """The (task, row) pairs a `BatchBuilder.state_dict()` holds drawn but not yet served, in the order it would
    serve them (each queue's micro-batches, then the rows waiting to be packed)."""
    rows: Chunk = []
    for queue in state["pending"].values():
        rows.extend((str(t), int(i)) for chunk in reversed(queue) for t, i in chunk)  # (served from the end)
    for waiting in state.get("leftover", {}).values():
        rows.extend((str(t), int(i)) for t, i in waiting)
    return rows


def _copy_numbers(pairs: Chunk) -> List[int]:
    """For each pair, how many times the same (task, row) occurs before it in `pairs` (0 for its first copy)."""
    seen: Dict[Tuple[str, int], int] = {}
    copies = []
    for pair in pairs:
        copies.append(seen.get(pair, 0))
        seen[pair] = copies[-1] + 1
    return copies


def count_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens of a batch: encoder inputs plus target tokens."""
    return int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
