"""Shared-memory output buffers that DataLoader workers reuse, released when the main process drops a batch.

Hand-written because neither torch nor MONAI offers it: torch moves every tensor a worker sends into
a new shared-memory segment, and on Linux the first write to each of its pages is a page fault. For
a 224² X-ray batch that is ~150 faults per sample, for a 16×192² CT window ~650 — measured in a
worker, writing those pages cost as much as preparing the sample itself. Here each worker keeps a
few segments and stacks its batches into one that the main process no longer uses, so after the
first batches no page is new. The main process says a segment is free by clearing its flag in a
small shared array once no tensor refers to the segment's memory any longer (a weak reference to
the storage); a worker whose segments are all in use falls back to a new segment, so a batch the
main process keeps for long (or one lost with an abandoned iterator) never blocks nor is overwritten.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator, Sequence

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from medkit.api.batch import stacking_into

#: segments per worker: the DataLoader's prefetch (2 per worker) plus the batch the main process
#: trains on and the one it has just dropped
SLOTS_PER_WORKER = 4

_FREE, _USED = 0, 1

log = logging.getLogger(__name__)


class SharedSlots:
    """The reusable segments of one DataLoader's workers.

    Created in the main process before the workers start (the flags are shared memory, inherited
    or sent with the dataset). Workers call :meth:`stacking` around building an item; the main
    process calls :meth:`received` with each item's slots as it arrives.

    Args:
        workers: the DataLoader's ``num_workers``; 0 disables everything (``stacking`` is a no-op).
        per_worker: segments each worker may keep.
        compact: let grey batches cross as one channel (their consumer moves them with ``Batch.to``).
    """

    def __init__(self, workers: int, per_worker: int = SLOTS_PER_WORKER, compact: bool = True) -> None:
        self.per_worker = int(per_worker)
        self.compact = bool(compact)
        n = max(0, int(workers)) * self.per_worker
        self.flags: torch.Tensor | None = torch.zeros(n, dtype=torch.int32).share_memory_() if n else None
        self._storages: dict[int, torch.UntypedStorage] = {}  # worker side: slot → its segment
        self._warned = False
        self._held: list[tuple[list[int], list[Any]]] = []  # main side: (slots, weak refs to the item's storages)

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker starts with no segment of its own
        state = dict(self.__dict__)
        state["_storages"], state["_held"] = {}, []
        return state

    # -- worker side -------------------------------------------------------------------------
    @contextlib.contextmanager
    def stacking(self) -> Iterator[list[int]]:
        """In a worker: :func:`~medkit.api.batch.stack_inputs` writes into free segments; yields
        the list of slots taken (sent with the item). Elsewhere: nothing changes."""
        info = torch.utils.data.get_worker_info()
        taken: list[int] = []
        if info is None or self.flags is None:
            yield taken
            return
        first = int(info.id) * self.per_worker
        flags = self.flags

        def alloc(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
            numel = math.prod(shape)
            nbytes = numel * dtype.itemsize
            free = [k for k in range(first, first + self.per_worker) if int(flags[k]) == _FREE]
            if not free:
                return None  # every segment is still in use: a fresh one, as torch would
            fits = [k for k in free if k in self._storages and self._storages[k].nbytes() >= nbytes]
            if fits:
                k = min(fits, key=lambda j: self._storages[j].nbytes())
            else:  # a new segment (in an empty slot, or replacing one too small)
                k = next((j for j in free if j not in self._storages), free[0])
                self._storages.pop(k, None)
                try:
                    self._storages[k] = torch.UntypedStorage._new_shared(nbytes)
                except RuntimeError as err:  # /dev/shm full: give back the idle segments, let torch try
                    for j in free:
                        self._storages.pop(j, None)
                    if not self._warned:
                        self._warned = True
                        log.warning("DataLoader worker %d: no shared memory for a %d-byte batch segment (%s); "
                                    "gave back its idle segments and lets torch allocate this batch (a "
                                    "container needs a larger --shm-size, or --ipc=host)", info.id, nbytes,
                                    str(err).splitlines()[0])
                    return None
            flags[k] = _USED
            taken.append(k)
            # the segment as a flat tensor of dtype, its first numel values viewed as shape
            return torch.empty(0, dtype=dtype).set_(self._storages[k])[:numel].view(shape)

        try:
            with stacking_into(alloc, self.compact):
                yield taken
        except BaseException:
            for k in taken:  # nothing was sent
                flags[k] = _FREE
            raise

    # -- main side ---------------------------------------------------------------------------
    def received(self, slots: list[int], tensors: Sequence[torch.Tensor | None]) -> None:
        """The main process got an item built in ``slots``, whose tensors are ``tensors``: the
        slots stay in use while anything refers to the memory of any of them. Releases the slots of
        earlier items that nothing refers to any longer."""
        if self.flags is None:
            return
        held = [t for t in tensors if t is not None]
        if slots:
            if held and all(t.is_pinned() for t in held):  # the pin thread copied them: the segments are gone
                for k in slots:
                    self.flags[k] = _FREE
            else:
                self._held.append((list(slots), [StorageWeakRef(t.untyped_storage()) for t in held]))
        self.release()

    def release(self) -> None:
        """Free the slots of items whose memory no tensor of this process refers to any longer."""
        if self.flags is None:
            return
        keep = []
        for slots, refs in self._held:
            if all(ref.expired() for ref in refs):
                for k in slots:
                    self.flags[k] = _FREE
            else:
                keep.append((slots, refs))
        self._held = keep
