"""A built decode step, reused while the model's weights are bit for bit those it was built from.

Building the fast step (`kv_slots._llama_like`) packs every projection for oneDNN: 56 ms for
the 17M Llama in fp32 (19 ms in bf16) on the 2-core test machine, paid by every `generate`
call and every batch the `hf` backend runs — at batch 1 a quarter of a 64-token call
(issue #19). The packed copies may be reused only while the model computes what they
were packed from, and nothing cheap says so: fused optimizers and `.data` writes change
weights in place without bumping version counters, `load_state_dict` copies into the same
tensors. So the memo keeps a bitwise copy of every parameter and buffer and reuses the step
only when each is the same tensor object (same dtype, shape, device) with the same bits —
~5 ms for the 17M model in fp32 (memcmp), checked smallest tensors first so that a trained model
(norm weights change with everything else) is told apart at once. The copy costs the
model's size in memory once more; models above `MEMO_MAX_BYTES` are rebuilt every time.

Tensors are not all a step reads when it is built: attention `scaling`, norm
`variance_epsilon` and the rotary module's `attention_scaling` are plain attributes, and the
modules' hooks decide whether the fast step may bypass them. So the snapshot also holds every
module's plain attributes, its hooks (and an instance `forward`), the config's plain values
and torch's global module hooks: a change to any of them rebuilds the step.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

MEMO_MAX_BYTES = 256 << 20
_MEMO: "weakref.WeakKeyDictionary[Any, tuple[WeightsSnapshot, Any, Any]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class WeightsSnapshot:
    """The model's modules, tensors and a bitwise copy of their values, at one moment."""

    def __init__(self, model: Any):
        self.modules = _module_states(model)
        tensors = _tensors(model)
        self.ids = _identities(tensors)
        self.copies = [t.detach().clone() for _, t in tensors]

    def matches(self, model: Any) -> bool:
        if _module_states(model) != self.modules:
            return False
        tensors = _tensors(model)
        if _identities(tensors) != self.ids:
            return False
        return all(_same_bits(t.detach(), copy) for (_, t), copy in zip(tensors, self.copies))


def _identities(tensors: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    """What must stay the same of each tensor besides its bits: the object, dtype, shape, device."""
    return [(name, id(t), t.dtype, tuple(t.shape), t.device) for name, t in tensors]


_PLAIN = (bool, int, float, str, type(None))


def _plain(attributes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The plain values (numbers, strings, and tuples/lists of them, copied) among attributes."""
    return tuple((key, tuple(value) if isinstance(value, list) else value) for key, value in attributes.items()
                 if isinstance(value, _PLAIN) or (isinstance(value, (tuple, list))
                                                  and all(isinstance(x, _PLAIN) for x in value)))


def _module_states(model: Any) -> list[Any]:
    """Per module: name, identity, type, plain attributes, forward hooks and an instance
    `forward` (what wrappers such as accelerate's hooks replace); then the config's plain
    values and torch's global forward hooks. What a built step may have read besides tensors."""
    from torch.nn.modules import module as torch_module

    states: list[Any] = []
    for name, module in model.named_modules():
        own = vars(module)
        states.append((name, id(module), type(module), _plain(own), tuple(own.get("_forward_pre_hooks", ())),
                       tuple(own.get("_forward_hooks", ())), id(own.get("forward"))))
    config = getattr(model, "config", None)
    states.append(_plain(vars(config)) if config is not None else None)
    states.append((tuple(torch_module._global_forward_pre_hooks), tuple(torch_module._global_forward_hooks)))
    return states


def _tensors(model: Any) -> list[tuple[str, Any]]:
    """Every parameter and buffer, smallest first (norm weights, then projections)."""
    named = list(model.named_parameters(remove_duplicate=True)) + list(model.named_buffers(remove_duplicate=True))
    return sorted(named, key=lambda pair: (pair[1].numel(), pair[0]))


def _memcmp() -> Any:
    """libc's memcmp, or None where the process has no C library to call (then torch.equal)."""
    global _MEMCMP
    if _MEMCMP is False:
        try:
            import ctypes

            fn = ctypes.CDLL(None).memcmp
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            _MEMCMP = fn
        except (ImportError, OSError, AttributeError, TypeError):  # no _ctypes, no libc, Windows' CDLL(None)
            _MEMCMP = None
    return _MEMCMP


_MEMCMP: Any = False


def _same_bits(a: Any, b: Any) -> bool:
    import torch

    # A conjugate or negative view's bytes are its base's: its values first (a no-op otherwise).
    a, b = a.resolve_conj().resolve_neg(), b.resolve_conj().resolve_neg()
    # Contiguous CPU tensors of one dtype and shape: their bytes, compared at memory speed
    # (2.8 vs 5.9 ms for 60 MB with torch.equal here). Not quantized ones: their scale is no byte.
    memcmp = _memcmp()
    if (memcmp is not None and a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype
            and a.shape == b.shape and a.layout == b.layout == torch.strided and not a.is_quantized
            and a.is_contiguous() and b.is_contiguous()):
        size = a.numel() * a.element_size()
        return size == 0 or memcmp(a.data_ptr(), b.data_ptr(), size) == 0
    if a.is_floating_point() and a.element_size() in (2, 4, 8):
        as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.view(as_int), b.view(as_int))  # -0.0 vs 0.0 and NaN payloads count
    return torch.equal(a, b)


def nbytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for _, t in _tensors(model))


def _may_reuse(model: Any) -> bool:
    from drover.local.packed_linear import may_pack

    first = next(model.parameters(), None)
    return first is not None and may_pack(first.dtype, first.device) and nbytes(model) <= MEMO_MAX_BYTES


def memoised(model: Any, builder: Any, build: Callable[[Any], Any]) -> Any:
    """`build(model)`, or the step `builder` built before for this model if the model's
    weights have not changed since. A step that carries `reusable = True` (one whose build
    is costly: packed weights) is remembered."""
    with _LOCK:
        found = _MEMO.get(model)
    if found is not None and found[1] is builder and found[0].matches(model):
        return found[2]
    # Snapshot first, then build: weights changed while the step packs them (another thread
    # training the model) then differ from the snapshot, so the next call rebuilds; a snapshot
    # taken after the build would vouch for weights the packed copy never saw.
    # (Only where the step can pack at all: elsewhere a build is cheap and never remembered.)
    snapshot = WeightsSnapshot(model) if _may_reuse(model) else None
    step = build(model)
    with _LOCK:
        _MEMO.pop(model, None)
        if snapshot is not None and getattr(step, "reusable", False):
            _MEMO[model] = (snapshot, builder, step)
    return step
