"""Damage inside a checkpoint's torch file that still opens (`t2t_mtl.engine.torch_file_integrity`, through
`checkpoint_loading.check_loadable`): a block of zeros or a flipped bit in a record's data loads in torch without an
error, and a zeroed record header passes torch's memory-mapped load but fails its full read (DeepSpeed's); each is
refused naming the file and the record, where the file as torch wrote it passes."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch.utils.serialization import config as serialization_config

from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.checkpoint_loading import check_loadable

HINT = ("the checkpoint is incomplete or corrupt: resume from an earlier one (--resume <run>/checkpoints/step-N) or "
        "remove it")


def _crc_mismatch(record: str) -> str:
    """check_intact's error for record `record` whose data does not match its CRC-32 (written out here, the oracle)."""
    return (f"record {record} does not match the CRC-32 torch recorded for it at save: its data changed after it "
            f"was written")


def _saved(path: Path, **kwargs) -> dict:
    """A state as DeepSpeed's files hold it (tensors beside plain values), saved with torch.save at `path`."""
    state = {"module": {"w": torch.arange(4096, dtype=torch.float32), "b": torch.ones(7)}, "step": 3}
    torch.save(state, path, **kwargs)
    return state


def _record(path: Path, name: str) -> tuple:
    """(the offset of record `name`'s local header, of its data, its size) in torch zip file `path`."""
    info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith(name))
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset, info.header_offset + 30 + name_length + extra_length, info.file_size


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _flip_bit(path: Path, at: int, mask: int) -> None:
    """Flip the bits of `mask` in byte `at` of `path` (a bit a disk or a copy changed)."""
    _overwrite(path, at, bytes([path.read_bytes()[at] ^ mask]))


def _refusal(path: Path) -> str:
    """The message of check_loadable's CheckpointError on `path` (the test fails where it passes the file)."""
    with pytest.raises(CheckpointError) as refused:
        check_loadable(path)
    return str(refused.value)


def _w_record(path: Path) -> str:
    """The zip name of the record holding the tensor `w` of `_saved` (its storage's key, read by torch.load)."""
    key = torch.load(path, mmap=True, weights_only=False)["module"]["w"].untyped_storage()
    sizes = {i.filename: i.file_size for i in zipfile.ZipFile(path).infolist()}
    return next(name for name, size in sizes.items() if "/data/" in name and size == key.nbytes())


def test_a_file_as_torch_wrote_it_passes_with_or_without_its_crc32s(tmp_path):
    _saved(tmp_path / "crc.pt")
    check_loadable(tmp_path / "crc.pt")
    saving = serialization_config.save.compute_crc32
    serialization_config.save.compute_crc32 = False
    try:
        _saved(tmp_path / "no_crc.pt")
    finally:
        serialization_config.save.compute_crc32 = saving
    assert {i.CRC for i in zipfile.ZipFile(tmp_path / "no_crc.pt").infolist()} == {0}
    check_loadable(tmp_path / "no_crc.pt")
    _saved(tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # (no zip: torch reads it whole)
    check_loadable(tmp_path / "legacy.pt")


@pytest.mark.parametrize("damage", ["zeros", "bit flip"])
def test_data_damaged_inside_a_file_that_still_loads_is_refused_naming_the_file_and_the_record(tmp_path, damage):
    path = tmp_path / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    state = _saved(path)
    record = _w_record(path)
    _, start, size = _record(path, record)
    if damage == "zeros":  # (a block a copy or a disk lost)
        _overwrite(path, start + size // 4, bytes(size // 2))
    else:
        _flip_bit(path, start + 2001, 0x08)
    for mmap in (True, False):  # torch loads it without a word, other weights than were saved (the damage)
        loaded = torch.load(path, mmap=mmap, weights_only=False)
        assert not torch.equal(loaded["module"]["w"], state["module"]["w"])
    assert _refusal(path) == f"{path} is damaged ({_crc_mismatch(record)}); {HINT}"


def test_a_zeroed_record_header_that_the_memory_mapped_load_passes_is_refused_naming_it(tmp_path):
    # torch's memory-mapped load (what check_loadable tried) reads no record header; its full read, DeepSpeed's,
    # fails on it: on a file one rank reads alone, that rank stopped alone inside DeepSpeed's load
    path = tmp_path / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    _saved(path)
    record = _w_record(path)
    header, _, _ = _record(path, record)
    _overwrite(path, header, bytes(30))
    torch.load(path, mmap=True, weights_only=False)
    with pytest.raises(RuntimeError, match="invalid header or archive is corrupted"):
        torch.load(path, weights_only=False)
    assert _refusal(path) == f"{path} is damaged (record {record} has no local header at offset {header}); {HINT}"


def test_a_record_header_naming_another_record_or_data_past_the_records_is_refused(tmp_path):
    path = tmp_path / "model_states.pt"
    _saved(path)
    record = _w_record(path)
    header, _, _ = _record(path, record)
    raw = path.read_bytes()
    renamed = raw[header + 30:header + 30 + len(record)].replace(b"data/", b"dat_/")
    _overwrite(path, header + 30, renamed)
    assert f"the local header of record {record} names another record" in _refusal(path)
    path.write_bytes(raw)
    size = _record(path, record)[2]  # its data pushed past the zip directory, not past the file's end,
    directory = zipfile.ZipFile(path).start_dir  # which torch's memory-mapped load passes
    _overwrite(path, header + 28, struct.pack("<H", directory - (header + 30 + len(record)) - size + 1))
    torch.load(path, mmap=True, weights_only=False)
    assert f"record {record} runs past the zip directory" in _refusal(path)


def _first_directory_entry(path: Path) -> int:
    return zipfile.ZipFile(path).start_dir


@pytest.mark.parametrize("damage, field, error", [
    # (a field of the zip directory, the bytes written there, what Python's zip reader said of it)
    ("version needed to extract", lambda path, raw: (_first_directory_entry(path) + 6, b"\xff\x00"),
     "zip file version 25.5"),
    ("zip64 end record's signature", lambda path, raw: (raw.rfind(b"PK\x06\x06"), b"PK\x06\x07"),
     "Bad magic number for central directory"),
    ("zip64 end record's disk number", lambda path, raw: (raw.rfind(b"PK\x06\x07") + 4, b"\x01"),
     "zipfiles that span multiple disks are not supported"),
])
def test_a_damaged_zip_directory_that_torch_reads_is_refused_naming_the_file(tmp_path, damage, field, error):
    # torch's own reader passes these (mmap and full loads give the saved values); Python's zip reader raised
    # NotImplementedError or BadZipFile out of check_loadable: a raw traceback from export, and on a resume one rank
    # leaving check_own_files before the ranks agreed, the others waiting for it
    path = tmp_path / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    state = _saved(path)
    at, data = field(path, path.read_bytes())
    _overwrite(path, at, data)
    for mmap in (True, False):
        assert torch.equal(torch.load(path, mmap=mmap, weights_only=False)["module"]["w"], state["module"]["w"])
    assert _refusal(path) == f"{path} is damaged (its zip directory cannot be read: {error}); {HINT}", damage


def test_without_data_the_check_reads_the_headers_alone(tmp_path):
    # (the check of a converted universal folder: a flipped data bit passes it, a zeroed record header does not)
    from t2t_mtl.engine.torch_file_integrity import DamagedFileError, check_intact

    path = tmp_path / "fp32.pt"
    _saved(path)
    _, start, _ = _record(path, _w_record(path))
    _flip_bit(path, start + 2001, 0x08)
    check_intact(path, data=False)
    with pytest.raises(DamagedFileError):
        check_intact(path)
    header, _, _ = _record(path, _w_record(path))
    _overwrite(path, header, bytes(30))
    with pytest.raises(DamagedFileError, match="has no local header"):
        check_intact(path, data=False)


def test_damage_in_a_file_holding_an_empty_tensor_is_refused(tmp_path):
    # an empty tensor's record (every parameter's placeholder in a ZeRO-3 module state) has the CRC-32 of no bytes, 0:
    # the file still holds CRC-32s for its other records, which are compared
    path = tmp_path / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.arange(4096, dtype=torch.float32), "placeholder": torch.empty(0)}}, path)
    assert 0 in {i.CRC for i in zipfile.ZipFile(path).infolist()}
    record = _w_record(path)
    _, start, size = _record(path, record)
    _overwrite(path, start + size // 4, bytes(size // 2))
    assert _refusal(path) == f"{path} is damaged ({_crc_mismatch(record)}); {HINT}"


def test_a_flipped_bit_in_the_pickled_values_that_torch_loads_is_refused(tmp_path):
    # the first record, data.pkl, holds the plain values: a bit flipped in the step (3 -> 2) loads as another step
    path = tmp_path / "trainer_state.pt"
    torch.save({"step": 3, "module": {"w": torch.ones(7)}}, path)
    pickled = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith("/data.pkl"))
    _, start, size = _record(path, "/data.pkl")
    step = b"stepq\x01K"  # (the key, its memo and BININT1, then the value 3)
    at = path.read_bytes().index(step + b"\x03", start, start + size) + len(step)
    _overwrite(path, at, b"\x02")
    assert torch.load(path, mmap=True, weights_only=False)["step"] == 2
    assert _refusal(path) == f"{path} is damaged ({_crc_mismatch(pickled.filename)}); {HINT}"


def test_a_flipped_bit_in_any_record_is_refused_naming_that_record(tmp_path):
    from t2t_mtl.engine.torch_file_integrity import DamagedFileError, check_intact

    path = tmp_path / "model_states.pt"
    _saved(path)
    raw = path.read_bytes()
    records = [i.filename for i in zipfile.ZipFile(path).infolist() if i.file_size]
    assert records[-1].endswith("/.data/serialization_id")  # (the last one: every record is compared, the last too)
    for name in records:
        _, start, size = _record(path, name)
        _flip_bit(path, start + size // 2, 0x01)
        with pytest.raises(DamagedFileError) as refused:
            check_intact(path)
        assert str(refused.value) == _crc_mismatch(name)
        path.write_bytes(raw)
