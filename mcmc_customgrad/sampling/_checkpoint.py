"""Checkpoints: a directory of ``.npz`` chunks written atomically, read without pickle.

Layout of ``path/``::

    meta.json           what run this is (settings, seed, parameter layout, initial points)
    warmup.npz          the adapted state, step size and mass matrix, warmup statistics
    chunk_000000.npz    draws [start, stop) of every chain, and the chain state after them
    chunk_000001.npz    ...

Every file is written to a temporary name, flushed to disk (``fsync``) and renamed over
its final name, so a process killed at any instant (SIGKILL included) leaves each file
either complete or absent; leftover temporary files are removed on the next open.
Files are read with ``numpy.load(allow_pickle=False)``: a checkpoint from elsewhere can
hold only plain arrays, never code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

__all__ = ["Checkpoint", "CheckpointError"]

FORMAT = "mcmc_customgrad-checkpoint"
VERSION = 1
_CHUNK = re.compile(r"^chunk_(\d{6})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed by this run."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_npz(path: Path) -> dict:
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # zipfile, CRC, pickle refusal: all mean "not ours"
        raise CheckpointError(
            f"checkpoint file {path} cannot be read ({type(err).__name__}: {err}). It was "
            "not written by mcmc_customgrad or was damaged after writing; move it away to "
            "resume from the chunks before it."
        ) from err


class Checkpoint:
    """A checkpoint directory for one run.

    Parameters
    ----------
    path : str or Path
        Directory (created if missing).
    meta : dict
        JSON-serialisable description of the run. An existing directory is resumed only
        when its ``meta.json`` is identical; otherwise :class:`CheckpointError` says
        which entries differ.
    """

    def __init__(self, path, meta: dict):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"checkpoint path {self.path} exists and is not a directory.")
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp"):
            stale.unlink()
        meta = {"format": FORMAT, "version": VERSION, **meta}
        meta = json.loads(json.dumps(meta))  # normalise (tuples -> lists)
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            try:
                existing = json.loads(meta_path.read_text())
            except (ValueError, OSError) as err:
                raise CheckpointError(f"{meta_path} is not valid JSON: {err}.") from err
            if existing != meta:
                keys = sorted(set(existing) | set(meta))
                diff = [k for k in keys if existing.get(k) != meta.get(k)]
                raise CheckpointError(
                    f"checkpoint {self.path} belongs to a different run: {diff} differ "
                    f"(stored {[existing.get(k) for k in diff]}, now "
                    f"{[meta.get(k) for k in diff]}). Use another checkpoint path, or "
                    "delete this one to start afresh."
                )
        else:
            text = json.dumps(meta, indent=1, sort_keys=True).encode()
            _atomic_write(meta_path, lambda f: f.write(text))
        self.meta = meta

    def load_warmup(self) -> dict | None:
        """The saved warmup arrays, or None when warmup has not finished."""
        path = self.path / "warmup.npz"
        return _read_npz(path) if path.exists() else None

    def save_warmup(self, arrays: dict) -> None:
        """Save the warmup result."""
        _atomic_write(self.path / "warmup.npz", lambda f: np.savez(f, **arrays))

    def load_chunks(self) -> list[dict]:
        """Every saved chunk, in order; each must start where the previous stopped."""
        found = sorted(
            (int(m.group(1)), p) for p in self.path.iterdir() if (m := _CHUNK.match(p.name))
        )
        chunks, stop = [], 0
        for expected, (index, path) in enumerate(found):
            if index != expected:
                raise CheckpointError(
                    f"checkpoint {self.path}: chunk {expected} is missing but chunk {index} "
                    "exists. Chunks are written in order, so this directory was edited; "
                    "remove the chunks after the gap to resume."
                )
            chunk = _read_npz(path)
            if int(chunk.get("start", -1)) != stop:
                raise CheckpointError(
                    f"checkpoint {path} starts at draw {int(chunk.get('start', -1))}, "
                    f"expected {stop}."
                )
            stop = int(chunk["stop"])
            chunks.append(chunk)
        return chunks

    def save_chunk(self, index: int, arrays: dict) -> None:
        """Save chunk ``index`` (arrays must include ``start`` and ``stop``)."""
        _atomic_write(self.path / f"chunk_{index:06d}.npz", lambda f: np.savez(f, **arrays))
