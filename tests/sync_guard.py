"""A guard that makes CUDA host synchronisation visible on CPU: inside ``HostSyncGuard()`` every operation that
would make the host wait for a CUDA device raises ``HostSync`` naming it.

Those operations are the ones whose result the host must see before it can go on: a value read back
(``item``, ``bool(t)``, ``tolist`` — ``_local_scalar_dense``), an output whose size depends on the data
(``nonzero``, boolean-mask indexing and assignment, ``masked_select``, ``unique``, ``bincount``,
``repeat_interleave`` without ``output_size``), and a tensor made from host data (``torch.tensor(x)``, whose copy to
the device waits on pageable memory). On a CUDA machine ``torch.cuda.set_sync_debug_mode("error")`` is the same
check done by the driver; this one runs anywhere, so the tests can hold the training path to it.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from atlens.devicesync import reading_deliberately

aten = torch.ops.aten


class HostSync(RuntimeError):
    """An operation on the guarded path would wait for the device."""


def _packets(*ops):
    return {getattr(aten, name) for name in ops if hasattr(aten, name)}


# operator packets whose every overload waits for the device
ALWAYS = _packets("_local_scalar_dense", "nonzero", "nonzero_static_never", "masked_select", "_unique",
                  "_unique2", "unique_dim", "unique_consecutive", "bincount", "lift_fresh")
INDEXED = _packets("index", "index_put", "index_put_", "_index_put_impl_")


def _is_bool_mask(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype == torch.bool


class HostSyncGuard(TorchDispatchMode):
    """Raise ``HostSync`` on every operation that synchronises host and device on CUDA (see the module).
    ``Tensor.tolist`` reads the data without dispatching an operator, so the guard replaces it while active."""

    def __enter__(self):
        self._tolist = torch.Tensor.tolist

        def tolist(tensor):
            if reading_deliberately():
                return self._tolist(tensor)
            raise HostSync("tolist reads the tensor on the host")

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if reading_deliberately():  # a read the code names as meant (atlens.devicesync)
            return func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in INDEXED and len(args) > 1 and any(_is_bool_mask(i) for i in (args[1] or [])):
            raise HostSync(f"{packet.__name__} with a boolean mask: the output size depends on the data")
        if packet in ALWAYS:
            raise HostSync(f"{packet.__name__} waits for the device (reads a value back, sizes its output by the data, "
                           f"or makes a tensor of host data)")
        if packet is aten.repeat_interleave and kwargs.get("output_size") is None and not (
                len(args) > 2 and isinstance(args[1], int)):
            raise HostSync("repeat_interleave without output_size: the output size depends on the data")
        return func(*args, **kwargs)
