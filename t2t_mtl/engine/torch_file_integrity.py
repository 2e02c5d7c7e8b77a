"""Whether a torch file of a checkpoint still holds what torch wrote into it, read without unpickling it.

Damage inside a file that still opens — a block of zeros where an interrupted or parallel copy, a filesystem or a disk
lost data, a flipped bit — loads without an error: a resume trained on from damaged weights or optimizer states
without a word, or, where the damage hit a record's local header, failed inside DeepSpeed's full read of that file
(torch's memory-mapped load, with which `check_loadable` tries a file, reads no record header), on one rank alone
for the files a rank reads alone. A file cut short loses its zip directory (at its end) and fails to open already.

torch's zip format (torch.save's default, and DeepSpeed's unless `checkpoint.checkpoint_serialization` is false)
stores every record uncompressed (and reads it so) and records each one's CRC-32 in the zip directory, computed at save
(`torch.utils.serialization.config.save.compute_crc32`, on by default; where it is off every CRC-32 is 0); torch's
load never compares them. `check_intact` reads each record's local header (the one the directory names, its data
inside the file, before the directory) and, where the CRC-32s were recorded, each record's data against its
CRC-32: a read of the whole file (zlib's CRC-32: ~1.3 GB/s on one CPU core).
"""
from __future__ import annotations

import mmap
import struct
import zipfile
import zlib
from pathlib import Path

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version ... sizes), file name length, extra field length
_LOCAL_SIGNATURE = b"PK\x03\x04"


class DamagedFileError(ValueError):
    """A torch zip file whose records are not what its zip directory says torch wrote."""


def check_intact(path: Path, data: bool = True) -> None:
    """DamagedFileError where the zip directory of torch zip file `path` cannot be read (damage there that torch's
    reader passes: an entry's signature, version or disk number), or naming its record whose local header is not the
    one its zip directory names, whose data runs past its records, or (`data`, where torch recorded the CRC-32s) whose
    data does not match its CRC-32; without `data` no record's data is read. The caller has opened it with torch
    (`check_loadable`), or reads it with torch next. (Memory-mapped: its data is read once, not copied.)"""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError) as err:  # (torch's own reader passes such damage)
        raise DamagedFileError(f"its zip directory cannot be read: {err}") from None
    with archive, open(path, "rb") as fh, \
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as contents:
        records = archive.infolist()
        checksummed = data and any(info.CRC for info in records)  # (all 0: saved without them)
        for info in records:
            start = _data_start(contents, info, archive.start_dir)
            if checksummed and zlib.crc32(contents[start:start + info.compress_size]) != info.CRC:
                raise DamagedFileError(f"record {info.filename} does not match the CRC-32 torch recorded for it at "
                                       f"save: its data changed after it was written")


def _data_start(data: memoryview, info: zipfile.ZipInfo, directory: int) -> int:
    """Where record `info`'s data starts in the zip file `data` whose directory starts at `directory`;
    DamagedFileError where its local header is not the one the directory names, or its data runs past its
    records."""
    at = info.header_offset
    if at + _LOCAL_HEADER.size > directory or _LOCAL_HEADER.unpack_from(data, at)[0] != _LOCAL_SIGNATURE:
        raise DamagedFileError(f"record {info.filename} has no local header at offset {at}")
    _, name_length, extra_length = _LOCAL_HEADER.unpack_from(data, at)
    name_at = at + _LOCAL_HEADER.size
    if bytes(data[name_at:name_at + name_length]) != info.orig_filename.encode("utf-8"):
        raise DamagedFileError(f"the local header of record {info.filename} names another record")
    start = name_at + name_length + extra_length
    if start + info.compress_size > directory:  # (torch reads every record as stored, whatever the directory says)
        raise DamagedFileError(f"record {info.filename} runs past the zip directory")
    return start
