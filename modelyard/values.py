"""Conversion between Python values and the self-describing `modelyard.v1.Value`.

Python side: None, bool, int, float, str, bytes, list/tuple, dict[str, ...], and numpy
arrays or torch tensors (returned as numpy arrays). Conversion is lossless: ints stay ints,
tensors keep dtype and shape, and a decoded tensor is a numpy view of the wire bytes.

`tensor_from_list` is the one conversion between kinds: a signature that declares a
tensor's dtype takes a list of numbers for it (what JSON clients can send). Nothing is
guessed: an element that is not a number of that dtype's kind, or not in its range, and a
ragged list, are refused.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.struct_pb2 import NULL_VALUE

from modelyard.errors import InvalidArgument, Reason
from modelyard.v1 import value_pb2 as pb

_NUMPY_TO_DTYPE: dict[np.dtype[Any], pb.DataType.ValueType] = {
    np.dtype(np.bool_): pb.DATA_TYPE_BOOL,
    np.dtype(np.int8): pb.DATA_TYPE_INT8,
    np.dtype(np.int16): pb.DATA_TYPE_INT16,
    np.dtype(np.int32): pb.DATA_TYPE_INT32,
    np.dtype(np.int64): pb.DATA_TYPE_INT64,
    np.dtype(np.uint8): pb.DATA_TYPE_UINT8,
    np.dtype(np.float16): pb.DATA_TYPE_FLOAT16,
    np.dtype(np.float32): pb.DATA_TYPE_FLOAT32,
    np.dtype(np.float64): pb.DATA_TYPE_FLOAT64,
}
_DTYPE_TO_NUMPY = {v: k.newbyteorder("<") for k, v in _NUMPY_TO_DTYPE.items()}
#: The numpy dtype names a tensor can have on the wire, as signatures declare them.
DTYPES = tuple(str(dtype) for dtype in _NUMPY_TO_DTYPE)


def data_type(dtype: str) -> pb.DataType.ValueType:
    """The wire DataType of a numpy dtype name in `DTYPES`, e.g. "float32"."""
    return _NUMPY_TO_DTYPE[np.dtype(dtype)]


def to_value(obj: Any) -> pb.Value:
    """Encodes a Python object as a Value; raises TypeError for what has no encoding."""
    value = pb.Value()
    _fill(value, obj)
    return value


def to_value_map(obj: Mapping[str, Any]) -> dict[str, pb.Value]:
    return {key: to_value(item) for key, item in obj.items()}


def fill_value_map(target: Any, obj: Mapping[str, Any]) -> None:
    """Writes `obj` into a protobuf map<string, Value> field in place (no copies)."""
    for key, item in obj.items():
        _fill(target[key], item)


def _fill(value: pb.Value, obj: Any) -> None:
    # bool before int: bool is a subclass of int.
    if obj is None:
        value.null_value = NULL_VALUE
    elif isinstance(obj, bool | np.bool_):
        value.bool_value = bool(obj)
    elif isinstance(obj, int | np.integer):
        value.int_value = int(obj)
    elif isinstance(obj, float | np.floating):
        value.float_value = float(obj)
    elif isinstance(obj, str):
        value.string_value = obj
    elif isinstance(obj, bytes | bytearray | memoryview):
        value.bytes_value = bytes(obj)
    elif isinstance(obj, Mapping):
        fields = value.map_value.fields
        value.map_value.SetInParent()
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"map keys must be strings, got {type(key).__name__}")
            _fill(fields[key], item)
    elif isinstance(obj, list | tuple):
        items = value.list_value.values
        value.list_value.SetInParent()
        for item in obj:
            _fill(items.add(), item)
    elif isinstance(obj, np.ndarray):
        _fill_tensor(value.tensor_value, obj)
    elif _is_torch_tensor(obj):
        _fill_tensor(value.tensor_value, _torch_to_numpy(obj))
    else:
        raise TypeError(f"cannot encode a {type(obj).__name__} as a modelyard Value")


def _fill_tensor(tensor: pb.Tensor, array: np.ndarray[Any, Any]) -> None:
    dtype = _NUMPY_TO_DTYPE.get(array.dtype.newbyteorder("="))
    if dtype is None:
        raise TypeError(f"tensors of dtype {array.dtype} are not supported")
    tensor.dtype = dtype
    tensor.shape.extend(array.shape)
    tensor.data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _is_torch_tensor(obj: Any) -> bool:
    # No torch import here: clients decode values without torch installed.
    return type(obj).__module__ == "torch" and type(obj).__name__ == "Tensor"


def _torch_to_numpy(tensor: Any) -> np.ndarray[Any, Any]:
    # the module that made `tensor`: already imported, and never a dependency of clients
    torch = sys.modules["torch"]
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        # numpy has no bfloat16: widen losslessly. Callers that need bf16 on the wire
        # can send the raw bytes with DTYPE_BFLOAT16 themselves.
        tensor = tensor.to(torch.float32)
    return tensor.numpy()  # type: ignore[no-any-return]


def from_value(value: pb.Value) -> Any:
    """Decodes a Value; raises InvalidArgument for an unset or malformed one."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "float_value":
        return value.float_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "null_value":
        return None
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    if kind == "map_value":
        return {key: from_value(item) for key, item in value.map_value.fields.items()}
    if kind == "tensor_value":
        return tensor_to_numpy(value.tensor_value)
    raise _malformed("a Value has no kind set (set exactly one of its fields)")


def from_value_map(values: Mapping[str, pb.Value], field: str = "") -> dict[str, Any]:
    """Decodes a map of Values. `field`: the request field that holds them ("inputs"),
    so that a malformed one's error names its path ("inputs.text")."""
    decoded: dict[str, Any] = {}
    for key, item in values.items():
        try:
            decoded[key] = from_value(item)
        except InvalidArgument as error:
            if not field:
                raise
            raise _malformed(error.message, f"{field}.{key}") from None
    return decoded


def _malformed(message: str, field: str = "") -> InvalidArgument:
    return InvalidArgument(message, reason=Reason.VALUE_MALFORMED, field=field)


def tensor_to_numpy(tensor: pb.Tensor) -> np.ndarray[Any, Any]:
    """Decodes a Tensor; InvalidArgument when its dtype, shape and data do not agree."""
    if tensor.dtype == pb.DATA_TYPE_BFLOAT16:
        # Checked here: numpy's own error for a ragged buffer would surface as INTERNAL.
        if len(tensor.data) % 2:
            raise _malformed(
                f"bfloat16 tensor data is {len(tensor.data)} bytes, not a multiple of 2"
            )
        # Widen bf16 to float32 by putting its 16 bits in the upper half of each float.
        raw = np.frombuffer(tensor.data, dtype="<u2")
        array = (raw.astype("<u4") << 16).view("<f4")
        return _reshape(array, tensor)
    dtype = _DTYPE_TO_NUMPY.get(tensor.dtype)
    if dtype is None:
        raise _malformed(f"tensor dtype {tensor.dtype} is not a known DataType")
    if len(tensor.data) % dtype.itemsize:
        raise _malformed(
            f"tensor data is {len(tensor.data)} bytes, not a multiple of {dtype.itemsize}"
        )
    return _reshape(np.frombuffer(tensor.data, dtype=dtype), tensor)


def _reshape(flat: np.ndarray[Any, Any], tensor: pb.Tensor) -> np.ndarray[Any, Any]:
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        # before the size check: negative dims can multiply to the right count
        raise _malformed(f"tensor shape {list(shape)} has a negative dimension")
    # math.prod on Python ints: numpy's int64 product wraps around for huge dimensions
    expected = math.prod(shape)
    if flat.size != expected:
        raise _malformed(
            f"tensor of shape {list(shape)} needs {expected} elements, data holds {flat.size}"
        )
    try:
        return flat.reshape(shape)
    except ValueError as error:
        # What still fails is a shape numpy cannot hold (too many dimensions, or an
        # empty tensor whose other dimensions overflow): the caller's to fix.
        raise _malformed(f"tensor shape {list(shape)} is not supported: {error}") from None


def tensor_from_list(items: list[Any], dtype: str) -> np.ndarray[Any, Any]:
    """A nested, rectangular list as a tensor of `dtype` (a name in `DTYPES`). Integers go
    into integer dtypes whose range holds them and into float dtypes; floats only into float
    dtypes; bools only into bool. Raises ValueError saying which element does not fit."""
    target = np.dtype(dtype)
    shape = _shape_of(items)
    leaves: list[Any] = []
    _collect(items, shape, "", leaves)
    fits = _LEAF_CHECKS[target.kind]
    for index, leaf in enumerate(leaves):
        problem = fits(leaf, target)
        if problem:
            raise ValueError(f"element {_position(index, shape)} {problem}")
    return np.array(leaves, dtype=target).reshape(shape)


def _shape_of(items: list[Any]) -> tuple[int, ...]:
    """The shape the first element at each depth implies (the rest must agree)."""
    shape: list[int] = []
    probe: Any = items
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    return tuple(shape)


def _collect(items: Any, shape: tuple[int, ...], path: str, leaves: list[Any]) -> None:
    depth = path.count("[")
    if depth == len(shape):
        if isinstance(items, list):
            raise ValueError(f"the list is ragged: element {path} is a list, not a number")
        leaves.append(items)
        return
    if not isinstance(items, list):
        got = _leaf_name(items)
        raise ValueError(
            f"the list is ragged: element {path} is {got}, not a list of {shape[depth]}"
        )
    if len(items) != shape[depth]:
        raise ValueError(
            f"the list is ragged: element {path} has {len(items)} elements, not {shape[depth]}"
        )
    for i, item in enumerate(items):
        _collect(item, shape, f"{path}[{i}]", leaves)


def _position(index: int, shape: tuple[int, ...]) -> str:
    return "".join(f"[{i}]" for i in np.unravel_index(index, shape)) if shape else "[]"


def _leaf_name(leaf: Any) -> str:
    names = {bool: "a bool", int: "an integer", float: "a float", str: "a string", dict: "a map"}
    return names.get(type(leaf), "null" if leaf is None else type(leaf).__name__)


def _fits_bool(leaf: Any, target: np.dtype[Any]) -> str:
    return "" if isinstance(leaf, bool) else f"is {_leaf_name(leaf)}, not a bool"


def _fits_integer(leaf: Any, target: np.dtype[Any]) -> str:
    if not isinstance(leaf, int) or isinstance(leaf, bool):
        return f"is {_leaf_name(leaf)}, not an integer"
    limits = np.iinfo(target)
    return "" if limits.min <= leaf <= limits.max else f"is out of the range of {target}"


def _fits_float(leaf: Any, target: np.dtype[Any]) -> str:
    if not isinstance(leaf, int | float) or isinstance(leaf, bool):
        return f"is {_leaf_name(leaf)}, not a number"
    try:
        number = float(leaf)
    except OverflowError:  # an integer beyond float64
        return f"is out of the range of {target}"
    # a finite number that would become infinite (1e6 in float16) is not that number
    if math.isfinite(number) and abs(number) > float(np.finfo(target).max):
        return f"is out of the range of {target}"
    return ""


_LEAF_CHECKS = {"b": _fits_bool, "i": _fits_integer, "u": _fits_integer, "f": _fits_float}


def jsonable(value: Any) -> Any:
    """`json.dumps(default=jsonable)` for decoded values, as the command line prints them:
    a tensor as dtype, shape and (up to 16) values, bytes as their length."""
    if isinstance(value, np.ndarray):
        shown: dict[str, Any] = {"dtype": str(value.dtype), "shape": list(value.shape)}
        flat = value.reshape(-1)
        shown["values"] = flat[:16].tolist() + (["..."] if flat.size > 16 else [])
        return shown
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
