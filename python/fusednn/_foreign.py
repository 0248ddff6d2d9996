"""Arrays of other frameworks (torch, JAX, anything with ``__dlpack__``).

The one module that knows about DLPack, torch and JAX; neither is imported
here until one of its arrays is seen. Every op of ``fusednn.ops`` and every
optimizer's ``apply`` / ``apply_gradients`` takes, besides NumPy and CuPy
arrays, any object with ``__dlpack__`` and ``__dlpack_device__``:

- a CPU array becomes a NumPy view of its memory (``np.from_dlpack``), a CUDA
  one a CuPy view (``cupy.from_dlpack``, on CuPy's current stream); no copy.
  A CUDA array needs the CUDA backend (``fusednn.has_cuda()``).
- Results come back as the caller's kind: the kind of the first argument
  that is neither NumPy nor CuPy, in the op's parameter order (a torch ``x``
  with a NumPy ``w`` gives torch; a NumPy ``x`` with a torch ``w`` gives
  torch too). torch in, torch out (``torch.from_dlpack``); JAX in, JAX out
  (``jax.numpy.from_dlpack``); another library that follows the array API
  standard gets its own ``from_dlpack``, one that does not gets NumPy/CuPy.
  JAX applies its own dtype rule on the way back: without
  ``jax_enable_x64`` a float64 result (a loss) arrives as float32.
  All arguments NumPy/CuPy: results unchanged. Results share memory with
  fusednn's output, and an input returned as is (dropout at inference) is
  returned as the object that was passed.
- Only the arrays of the call decide: contexts returned by forward ops keep
  NumPy/CuPy arrays, and a backward op given torch ``dy`` returns torch
  whatever the forward was given.
- Refused, with an error naming the argument: a torch tensor that requires
  grad (pass ``t.detach()``, which shares its memory), a dtype NumPy cannot
  hold (bfloat16), a device other than the CPU and CUDA. Other dtypes reach
  the op's own checks (float16 or int where a float is needed: TypeError).
- Read-only inputs that are not C-contiguous are copied to C order, as for
  NumPy. Arrays updated in place (optimizer parameters, batch norm moving
  statistics) are never copied: a non-contiguous one is a ValueError, a
  read-only one too, and a JAX array (immutable) a TypeError.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from . import _backend
from ._arrays import is_cupy

# DLPack device types (dlpack.h DLDeviceType).
_KDL_CPU, _KDL_CUDA, _KDL_CUDA_MANAGED = 1, 2, 13
_CONVERT_ERRORS = (BufferError, TypeError, ValueError, RuntimeError)


def _library(obj) -> str:
    """The top-level package of obj's type: "torch", "jax", "jaxlib", ..."""
    return type(obj).__module__.partition(".")[0]


def _describe(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__} of dtype {getattr(obj, 'dtype', '?')}"


def _kind(obj, library):
    """The function that turns a NumPy/CuPy result into obj's kind, or None."""
    if library == "torch":
        import torch

        return torch.from_dlpack
    if library in ("jax", "jaxlib"):
        import jax.numpy as jnp

        return jnp.from_dlpack
    namespace = getattr(obj, "__array_namespace__", None)
    if namespace is not None:
        from_dlpack = getattr(namespace(), "from_dlpack", None)
        if from_dlpack is not None:
            return from_dlpack
    return None


def accept(caller: str, name: str, obj, *, writable: bool = False):
    """-> (array, kind): obj as a NumPy or CuPy array (a view where possible) and
    a token for give_back (None when obj already was NumPy/CuPy). Raises TypeError/
    ValueError naming `name` as the module docstring describes. writable=True: the array will be
    updated in place (error instead of a copy).

    Objects without ``__dlpack__`` (None, lists, ...) come back unchanged with
    kind None, for the caller's own checks to report."""
    if isinstance(obj, np.ndarray) or is_cupy(obj) or not hasattr(obj, "__dlpack__"):
        return obj, None
    library = _library(obj)
    if library == "torch" and obj.requires_grad:
        raise TypeError(f"{caller}: {name} requires grad; pass {name}.detach() (it shares the "
                        f"tensor's memory)")
    if writable and library in ("jax", "jaxlib"):
        raise TypeError(f"{caller}: {name} is a JAX array, which is immutable, but it is updated "
                        f"in place; pass a NumPy array or a torch tensor")
    try:
        device_type, device_id = obj.__dlpack_device__()
    except (AttributeError, TypeError, ValueError) as e:
        raise TypeError(f"{caller}: {name} ({_describe(obj)}) has no usable "
                        f"__dlpack_device__: {e}") from None
    if device_type == _KDL_CPU:
        convert = np.from_dlpack
    elif device_type in (_KDL_CUDA, _KDL_CUDA_MANAGED):
        if not _backend.has_cuda():
            raise TypeError(f"{caller}: {name} is on CUDA device {device_id} but fusednn's CUDA "
                            f"backend is unavailable ({_backend.cuda_status()}); move it to the "
                            f"CPU first")
        import cupy

        convert = cupy.from_dlpack
    else:
        raise TypeError(f"{caller}: {name} ({_describe(obj)}) is on DLPack device type "
                        f"{int(device_type)}; fusednn runs on the CPU and on CUDA GPUs")
    try:
        a = convert(obj)
    except _CONVERT_ERRORS as e:
        raise TypeError(f"{caller}: {name} ({_describe(obj)}) cannot be read through DLPack: "
                        f"{e}") from None
    if writable:
        # Updated in place: a copy would silently drop the update.
        if not a.flags.c_contiguous:
            raise ValueError(f"{caller}: {name} must be C-contiguous (it is updated in place); "
                             f"got strides {a.strides} for shape {a.shape}")
        if isinstance(a, np.ndarray) and not a.flags.writeable:  # CuPy has no such flag
            raise ValueError(f"{caller}: {name} is read-only (it is updated in place)")
    return a, _kind(obj, library)


def _export(a, kind):
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        # NumPy refuses a read-only export to consumers of DLPack < 1.0,
        # which cannot mark it read-only; a copy keeps the values.
        a = a.copy()
    return kind(a)


def _convert(result, kind, originals):
    if isinstance(result, np.ndarray) or is_cupy(result):
        original = originals.get(id(result))
        return original if original is not None else _export(result, kind)
    if isinstance(result, tuple) and type(result) is not tuple:  # a NamedTuple
        return type(result)(*(_convert(r, kind, originals) for r in result))
    if isinstance(result, (tuple, list)):
        return type(result)(_convert(r, kind, originals) for r in result)
    if isinstance(result, dict):
        return {k: _convert(v, kind, originals) for k, v in result.items()}
    return result


def give_back(result, kind):
    """result (an array, or a tuple/list/dict nesting arrays; other values pass
    through unchanged) converted to `kind`; kind None -> unchanged."""
    return result if kind is None else _convert(result, kind, {})


def accept_all(caller: str, name: str, values, *, writable: bool = False) -> list:
    """list(values), each element through `accept` (named ``name[i]``); the
    kinds are dropped (for calls that return nothing, like an optimizer step)."""
    for v in values:
        if type(v) is not np.ndarray:
            break
    else:
        return list(values)
    return [accept(caller, f"{name}[{i}]", v, writable=writable)[0]
            for i, v in enumerate(values)]


def same_array(a, b) -> bool:
    """a is b, or a and b are views of the same memory with one layout (what
    accept makes of a torch tensor that wraps an array fusednn returned)."""
    if a is b:
        return True
    if type(a) is not type(b) or a.shape != b.shape or a.strides != b.strides or \
            a.dtype != b.dtype:
        return False
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    return a.data.ptr == b.data.ptr


def arrays(*names, writable=()):
    """Decorator: the parameters `names` of an op take DLPack objects too.

    `writable` names those the op updates in place. Any argument among
    `names` that is neither NumPy, CuPy nor None goes through `accept`, and
    the result through `give_back` with the kind of the first such argument
    in signature order (see the module docstring).

    The wrapper is generated with the op's own signature: the ops run in
    tight loops, and a generic ``(*args, **kwargs)`` wrapper costs several
    times more per call (packing, unpacking, a loop) than one frame and a
    ``type(a) is not ndarray`` test per array argument.
    """

    def wrap(fn):
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        missing = set(names) - set(sig.parameters)
        if missing:
            raise TypeError(f"{fn.__name__}: no parameters {sorted(missing)}")
        order = [p.name for p in params if p.name in names]
        positional = [p.name for p in params
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        caller = fn.__name__

        def foreign_call(*args, **kwargs):
            args = list(args)
            kind = None
            originals = {}
            for name in order:
                i = positional.index(name) if name in positional else None
                obj = args[i] if i is not None else kwargs.get(name)
                a, k = accept(caller, name, obj, writable=name in writable)
                if k is None:
                    continue
                kind = kind or k
                if k is kind:
                    originals[id(a)] = obj
                if i is not None:
                    args[i] = a
                else:
                    kwargs[name] = a
            result = fn(*args, **kwargs)
            return result if kind is None else _convert(result, kind, originals)

        namespace = {"_fd_ndarray": np.ndarray, "_fd_fn": fn, "_fd_slow": foreign_call}
        head, call = [], []
        starred = False  # a * or *args is in head: what follows is keyword-only
        for j, p in enumerate(params):
            if p.kind == p.VAR_POSITIONAL:
                head.append(f"*{p.name}")
                call.append(f"*{p.name}")
                starred = True
                continue
            if p.kind == p.VAR_KEYWORD:
                head.append(f"**{p.name}")
                call.append(f"**{p.name}")
                continue
            if p.kind == p.KEYWORD_ONLY and not starred:
                head.append("*")
                starred = True
            text = p.name
            if p.default is not p.empty:
                namespace[f"_fd_default_{p.name}"] = p.default
                text += f"=_fd_default_{p.name}"
            head.append(text)
            call.append(f"{p.name}={p.name}" if p.kind == p.KEYWORD_ONLY else p.name)
            if p.kind == p.POSITIONAL_ONLY and (j + 1 == len(params) or
                                                params[j + 1].kind != p.POSITIONAL_ONLY):
                head.append("/")
        test = " or ".join(f"(type({n}) is not _fd_ndarray and {n} is not None)" for n in order)
        args = ", ".join(call)
        source = (f"def {fn.__name__}({', '.join(head)}):\n"
                  f"    if {test}:\n"
                  f"        return _fd_slow({args})\n")
        if params[-1].kind == params[-1].VAR_KEYWORD:
            # Unpacking an empty **dict into the call costs as much as the rest
            # of the wrapper: skip it when there is nothing in it.
            source += (f"    if {params[-1].name}:\n"
                       f"        return _fd_fn({args})\n")
            args = ", ".join(call[:-1])
        source += f"    return _fd_fn({args})\n"
        exec(source, namespace)  # noqa: S102 (the source is built above from fn's signature)
        return functools.wraps(fn)(namespace[fn.__name__])

    return wrap
