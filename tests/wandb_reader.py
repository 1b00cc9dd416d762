"""Reads the records of an offline W&B run file (run-<id>.wandb), for tests.

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB
blocks of chunks, each `crc32 (4) | length (2) | type (1) | data`, type 1 a whole record and
2/3/4 its first/middle/last pieces; a record is a wandb_internal_pb2.Record protobuf.
"""

from __future__ import annotations

import glob
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7


def records(path: Path) -> list:
  from wandb.proto import wandb_internal_pb2 as pb
  data = Path(path).read_bytes()
  assert data[:4] == b":W&B", "not a W&B run file"
  pos, buf, out = HEADER, b"", []
  while pos + HEADER <= len(data):
    room = BLOCK - pos % BLOCK
    if room < HEADER:  # a block's tail too short for a chunk header is padding
      pos += room
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
    pos += HEADER
    if length == 0 and kind == 0:
      break
    buf += data[pos:pos + length]
    pos += length
    if kind in (1, 4):
      record = pb.Record()
      record.ParseFromString(buf)
      out.append(record)
      buf = b""
  return out


def history(workdir: Path) -> list[dict]:
  """The logged rows ({key: float}) of the one offline run under `workdir`."""
  files = glob.glob(str(Path(workdir) / "wandb" / "offline-run-*" / "run-*.wandb"))
  assert len(files) == 1, files
  rows = []
  for r in records(Path(files[0])):
    if r.WhichOneof("record_type") == "history":
      rows.append({(i.key or "/".join(i.nested_key)): float(i.value_json) for i in r.history.item})
  return rows


def run_config(workdir: Path) -> dict:
  files = glob.glob(str(Path(workdir) / "wandb" / "offline-run-*" / "run-*.wandb"))
  for r in records(Path(files[0])):
    if r.WhichOneof("record_type") == "run":
      return {i.key: i.value_json for i in r.run.config.update}
  return {}
