"""Several processes (JAX's multi-controller runtime): who speaks, who owns which chains.

After ``jax.distributed.initialize(...)`` every process runs the same program, and
``jax.devices()`` lists the devices of all of them. ``mcg.sample(...,
chain_method="parallel")`` then shards its chains over that global list (see
``._chains``); this module holds what the sampler and the validation sweeps need on top:

- :func:`is_main`: process 0 prints progress and issues warnings, the others stay quiet;
- :func:`gather`: host arrays held per process, joined in process order on every process
  (a collective: every process must call it, with the same tree structure and shapes);
- :func:`gather_rows`, :func:`gather_json`: rows of different lengths, or any
  JSON-serialisable value, from every process;
- :func:`agree_min`: the smallest of one integer per process (how many checkpoint chunks
  every process has);
- :func:`my_share`: the items of an independent sweep (SBC's fits, the validation's
  models) that this process runs;
- :func:`collective`: a failed exchange (another process died) as
  :class:`DistributedError`.

Every exchange is a collective: every process must make the same calls in the same order.
With one process nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import json

import jax
import numpy as np

__all__ = [
    "DistributedError",
    "agree_min",
    "collective",
    "gather",
    "gather_json",
    "gather_rows",
    "is_main",
    "my_share",
    "process_count",
    "process_index",
]


class DistributedError(RuntimeError):
    """An exchange between the processes of a multi-process run failed.

    Raised in the processes still running when another one of the same run has stopped
    (killed, out of memory, or an error of its own), instead of JAX's transport error.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> issubclass(mcg.DistributedError, RuntimeError)
    True
    """


@contextlib.contextmanager
def collective(what: str):
    """Turn a failed exchange between processes into :class:`DistributedError`."""
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        if jax.process_count() == 1:
            raise
        raise DistributedError(
            f"process {jax.process_index()} of {jax.process_count()}: exchanging {what} with "
            f"the other processes failed ({str(err).strip().splitlines()[0]}). Another "
            "process of this run has most likely stopped (killed, out of memory, or an error "
            "of its own: see its output), and this one cannot go on alone. With a "
            "checkpoint, restart every process with the same call: the run resumes from the "
            "last chunk that every process saved."
        ) from err


def process_count() -> int:
    """How many processes run this program (1 without ``jax.distributed``)."""
    return jax.process_count()


def process_index() -> int:
    """The index of the calling process, from 0 to :func:`process_count` - 1."""
    return jax.process_index()


def is_main() -> bool:
    """True in process 0, the one that prints and warns."""
    return jax.process_index() == 0


def gather(tree):
    """Per-process host arrays (same shapes everywhere) stacked on a new leading axis.

    Returns NumPy arrays of shape ``(process_count, *shape)``, in process order, on every
    process. With one process: ``tree`` with a leading axis of 1.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.sampling._processes import gather
    >>> gather({"a": np.arange(3)})["a"].shape
    (1, 3)
    """
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], tree)
    from jax.experimental import multihost_utils

    with collective("host arrays"):
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=False))


def gather_rows(tree, index):
    """Rows computed by different processes, joined in the order of their item index.

    Parameters
    ----------
    tree : pytree of arrays
        This process's rows (leading axis, the same length in every leaf; the lengths may
        differ between processes).
    index : array of int
        The item index of each of this process's rows.

    Returns
    -------
    pytree of NumPy arrays
        Every process's rows, sorted by item index, on every process.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.sampling._processes import gather_rows
    >>> gather_rows({"a": np.array([5.0, 6.0])}, np.array([1, 0]))["a"].tolist()
    [6.0, 5.0]
    """
    index = np.asarray(index, dtype=np.int64)
    counts = gather(np.asarray(index.shape[0], dtype=np.int64))
    most = int(counts.max())

    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.zeros((most - x.shape[0], *x.shape[1:]), x.dtype)])

    joined = gather((jax.tree.map(pad, tree), pad(index)))
    keep = np.concatenate([np.arange(p * most, p * most + int(c)) for p, c in enumerate(counts)])
    rows, order = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:]))[keep], joined)
    by_index = np.argsort(order, kind="stable")
    return jax.tree.map(lambda x: x[by_index], rows)


def gather_json(value) -> list:
    """One JSON-serialisable value per process, as a list in process order, everywhere.

    Examples
    --------
    >>> from mcmc_customgrad.sampling._processes import gather_json
    >>> gather_json({"passed": True})
    [{'passed': True}]
    """
    data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    lengths = gather(np.asarray(data.size, dtype=np.int64))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: data.size] = data
    joined = gather(padded)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(joined, lengths, strict=True)]


def agree_min(value: int) -> int:
    """The smallest ``value`` over all processes (every process must call it)."""
    return int(np.min(gather(np.asarray(int(value), dtype=np.int64))))


def my_share(num_items: int) -> np.ndarray:
    """Indices of the items of an independent sweep that this process runs.

    Items are dealt round-robin (item ``i`` to process ``i % process_count``), so that
    costs that grow along the sweep are spread evenly.

    Examples
    --------
    >>> from mcmc_customgrad.sampling._processes import my_share
    >>> my_share(5).tolist()  # one process runs everything
    [0, 1, 2, 3, 4]
    """
    return np.arange(jax.process_index(), int(num_items), jax.process_count())
