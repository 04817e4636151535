"""Checkpoints: a directory of ``.npz`` chunks written atomically, read without pickle.

Layout of ``path/``::

    meta.json           what run this is: settings, seed, parameter layout, starting points,
                        the log-density's fingerprint and what each draw writes
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

from ._identity import values_match
from ._processes import agree_min, gather, process_count, process_index

__all__ = ["Checkpoint", "CheckpointError", "open_checkpoint"]

FORMAT = "mcmc_customgrad-checkpoint"
VERSION = 2
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


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _output_name(key: str) -> str:
    group, _, name = key.partition("__")
    if group == "posterior":
        return f"posterior variable {name!r}"
    if group == "solver":
        return f"solver statistic {name!r} (solver_stats)"
    if group == "log_likelihood":
        return "the log-likelihood"
    return repr(key)


def _density_differences(stored: dict, now: dict) -> list[str]:
    out = []
    for name, label, at in (
        ("lp_at_starts", "log-density at the starting points", "chain"),
        ("lp", "log-density", "probe point"),
        ("gradient", "gradient", "probe point"),
    ):
        a, b = stored.get(name), now.get(name)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            bad = [i for i in range(len(a)) if not values_match([a[i]], [b[i]])]
            if bad:
                i = bad[0]
                out.append(
                    f"the {label} differs (at {at} {i}: stored {_short(a[i])}, now {_short(b[i])})"
                )
        elif a != b:
            out.append(f"the {label} differs")
    return out


def _output_differences(stored: dict, now: dict, density_changed: bool) -> list[str]:
    out = []
    a, b = stored.get("arrays", {}), now.get("arrays", {})
    solver_a = sorted(k for k in a if k.startswith("solver__"))
    solver_b = sorted(k for k in b if k.startswith("solver__"))
    if bool(solver_a) != bool(solver_b):
        out.append(
            f"solver_stats was {bool(solver_a)} when the checkpoint was written and is "
            f"{bool(solver_b)} now"
        )
        a = {k: v for k, v in a.items() if k not in solver_a}
        b = {k: v for k, v in b.items() if k not in solver_b}
    for key in sorted(set(a) | set(b)):
        if key not in b:
            out.append(f"{_output_name(key)} was recorded but is not produced now")
        elif key not in a:
            out.append(f"{_output_name(key)} is produced now but was not recorded")
        elif a[key] != b[key]:
            out.append(f"{_output_name(key)} was recorded as {a[key]}, now {b[key]}")
    values_a, values_b = stored.get("values", {}), now.get("values", {})
    for key in sorted(set(values_a) & set(values_b)):
        if density_changed or a.get(key) != b.get(key):
            continue  # named above, or a consequence of the density
        va, vb = values_a[key], values_b[key]
        if values_match(va, vb):
            continue
        bad = [i for i in range(len(va)) if not values_match([va[i]], [vb[i]])]
        i = bad[0] if bad else 0
        out.append(
            f"{_output_name(key)} is computed differently (at probe point {i}: stored "
            f"{_short(va[i])}, now {_short(vb[i])})"
        )
    return out


def differences(stored: dict, now: dict) -> list[str]:
    """What differs between two checkpoint descriptions, one phrase per difference.

    Examples
    --------
    >>> from mcmc_customgrad.sampling._checkpoint import differences
    >>> differences({"seed": 5, "settings": {"target_accept": 0.8}},
    ...             {"seed": 5, "settings": {"target_accept": 0.9}})
    ['settings.target_accept: stored 0.8, now 0.9']
    """
    if stored.get("format") != now.get("format") or stored.get("version") != now.get("version"):
        return [
            f"it was written in checkpoint format {_short(stored.get('format'))} version "
            f"{_short(stored.get('version'))} (by another mcmc_customgrad release), and this "
            f"release reads version {now.get('version')} only"
        ]
    out = []
    last = ("init_sha256", "density", "outputs")  # consequences after their causes
    keys = sorted((set(stored) | set(now)) - set(last)) + list(last)
    for key in keys:
        a, b = stored.get(key), now.get(key)
        if a == b:
            continue
        if key == "density" and isinstance(a, dict) and isinstance(b, dict):
            if stored.get("init_sha256") != now.get("init_sha256"):  # other starts
                a, b = {**a, "lp_at_starts": None}, {**b, "lp_at_starts": None}
            out += _density_differences(a, b)
        elif key == "outputs" and isinstance(a, dict) and isinstance(b, dict):
            density_changed = bool(
                _density_differences(stored.get("density") or {}, now.get("density") or {})
            )
            out += _output_differences(a, b, density_changed)
        elif key == "init_sha256":
            out.append("the starting points differ (init or its jitter changed)")
        elif isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    out.append(
                        f"{key}.{sub}: stored {_short(a.get(sub))}, now {_short(b.get(sub))}"
                    )
        else:
            out.append(f"{key}: stored {_short(a)}, now {_short(b)}")
    return out


class Checkpoint:
    """A checkpoint directory for one run.

    Parameters
    ----------
    path : str or Path
        Directory (created if missing).
    meta : dict
        JSON-serialisable description of the run (see ``sampling._identity``). An
        existing directory is resumed only when its ``meta.json`` describes the same run
        (the log-density's probe values within a relative ``1e-8``, everything else
        equal); otherwise :class:`CheckpointError` names what differs and nothing is
        written.
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
            if not isinstance(existing, dict):
                raise CheckpointError(f"{meta_path} is not a checkpoint description.")
            diff = differences(existing, meta)
            if diff:
                raise CheckpointError(
                    f"checkpoint {self.path} belongs to a different run, so it was left as "
                    "it is: " + "; ".join(diff) + ". Call sample as when the checkpoint was "
                    "written to resume it, or use another checkpoint path (or delete this "
                    "one) to start afresh."
                )
        else:
            text = json.dumps(meta, indent=1, sort_keys=True).encode()
            _atomic_write(meta_path, lambda f: f.write(text))
        self.meta = meta

    @staticmethod
    def check_path(path) -> Path:
        """Fail early when ``path`` cannot be a checkpoint directory; nothing is created.

        Parameters
        ----------
        path : str or Path
            The checkpoint directory asked for.

        Returns
        -------
        Path

        Raises
        ------
        CheckpointError
            ``path`` is an existing file, or its nearest existing parent is not a
            writable directory.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise CheckpointError(
                f"checkpoint path {path} exists and is not a directory; give a directory."
            )
        parent = path if path.exists() else path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise CheckpointError(
                f"checkpoint path {path}: {parent} is not a writable directory, so nothing "
                "could be saved there; give a path you can write to."
            )
        return path

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


_PROCESS_DIR = re.compile(r"^process_(\d+)_of_(\d+)$")


def _written_by(root: Path) -> set[int]:
    """The process counts that wrote into checkpoint directory ``root`` (empty: none)."""
    if not root.is_dir():
        return set()
    counts = {int(m.group(2)) for p in root.iterdir() if (m := _PROCESS_DIR.match(p.name))}
    if (root / "meta.json").exists():
        counts.add(1)
    return counts


def open_checkpoint(path, meta: dict, chains: slice, sharded: bool):
    """The checkpoint of this process: :class:`Checkpoint` or, with several, a shard.

    Parameters
    ----------
    path : str or Path
        The checkpoint directory the user gave.
    meta : dict
        The run's description, as for :class:`Checkpoint`.
    chains : slice
        The chains this process computes.
    sharded : bool
        Whether the processes share the chains (``chain_method="parallel"``), so that
        each writes its own and a resume joins them; otherwise each process keeps a whole
        copy of its own.

    Raises
    ------
    CheckpointError
        The directory was written by another number of processes, or belongs to another
        run (in any process: every process then raises).
    """
    root, count = Path(path), process_count()

    def open_own():
        other = _written_by(root) - {count}
        if other:
            raise CheckpointError(
                f"checkpoint {root} was written by a run over {min(other)} process(es), and "
                f"this run has {count}. A checkpoint resumes only with the number of "
                f"processes that wrote it: restart with {min(other)} process(es), or use "
                "another checkpoint path (or delete this one) to start afresh."
            )
        if count == 1:
            return Checkpoint(root, meta)
        index = process_index()
        own = {"process": {"index": index, "count": count, "chains": [chains.start, chains.stop]}}
        part = Checkpoint(root / f"process_{index}_of_{count}", {**meta, **own})
        return _Shard(root, part, chains, sharded)

    return _agreed(open_own, root)


def _agreed(read, root: Path):
    """``read()`` in every process; where it raises in any, every process raises."""
    error = result = None
    try:
        result = read()
    except CheckpointError as err:
        error = err
    if process_count() > 1 and not agree_min(error is None):
        raise error or CheckpointError(
            f"checkpoint {root}: another process of this run refused it (its message is in "
            "its own output); nothing was written."
        )
    if error is not None:
        raise error
    return result


class _Shard:
    """One process's part of a checkpoint written by several.

    Each process writes the chains it computes into ``path/process_<i>_of_<n>/`` (a
    :class:`Checkpoint` of its own); reading joins every process's part in chain order,
    keeping only what every process has completed (a process killed between two writes
    leaves the others one chunk ahead: that chunk is computed again, with the same
    draws).
    """

    def __init__(self, root: Path, own: Checkpoint, chains: slice, sharded: bool):
        self.path, self.own, self.chains, self.sharded = root, own, chains, sharded

    def _mine(self, arrays: dict) -> dict:
        if not self.sharded:
            return arrays
        return {
            k: (v if np.ndim(v) == 0 else np.asarray(v)[self.chains]) for k, v in arrays.items()
        }

    def _join(self, arrays: dict) -> dict:
        if not self.sharded:
            return arrays
        joined = gather(arrays)
        return {
            k: (v[0] if np.ndim(arrays[k]) == 0 else v.reshape((-1, *v.shape[2:])))
            for k, v in joined.items()
        }

    def load_warmup(self) -> dict | None:
        """The whole warmup result, when every process has saved its part; else None."""
        mine = _agreed(self.own.load_warmup, self.path)
        if not agree_min(mine is not None):
            return None
        return self._join(mine)

    def save_warmup(self, arrays: dict) -> None:
        """Save this process's part of the warmup result."""
        self.own.save_warmup(self._mine(arrays))

    def load_chunks(self) -> list[dict]:
        """The chunks every process has saved, joined."""
        mine = _agreed(self.own.load_chunks, self.path)
        return [self._join(chunk) for chunk in mine[: agree_min(len(mine))]]

    def save_chunk(self, index: int, arrays: dict) -> None:
        """Save this process's part of chunk ``index``."""
        self.own.save_chunk(index, self._mine(arrays))
