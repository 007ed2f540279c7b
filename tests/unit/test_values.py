"""Value conversion: everything a model takes or returns survives the wire unchanged."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelyard.errors import InvalidArgument
from modelyard.v1 import value_pb2 as pb
from modelyard.values import from_value, tensor_from_list, to_value

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
dtypes = st.sampled_from(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64"]
)
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
)


def wire(obj: Any) -> Any:
    """Encode, serialise, parse, decode: the full trip a value makes."""
    return from_value(pb.Value.FromString(to_value(obj).SerializeToString()))


@given(values)
def test_plain_values_round_trip_exactly(obj: Any) -> None:
    decoded = wire(obj)
    assert decoded == obj
    assert type(decoded) is type(obj)  # an int stays an int, bytes stay bytes


@given(arrays)
def test_tensors_keep_dtype_shape_and_bits(array: np.ndarray[Any, Any]) -> None:
    decoded = wire(array)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    assert decoded.tobytes() == np.ascontiguousarray(array).tobytes()


def test_tensors_nested_in_maps_and_lists_round_trip() -> None:
    embedding = np.arange(6, dtype=np.float32).reshape(2, 3)
    decoded = wire({"embeddings": [embedding], "label": "x"})
    np.testing.assert_array_equal(decoded["embeddings"][0], embedding)


def test_torch_tensors_encode_as_tensors_including_bfloat16() -> None:
    decoded = wire(torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16))
    assert decoded.dtype == np.float32  # widened losslessly: numpy has no bfloat16
    np.testing.assert_array_equal(decoded, [[1.5, -2.0]])


def test_wire_bfloat16_tensors_decode_to_float32() -> None:
    bits = torch.tensor([1.0, -3.25], dtype=torch.bfloat16).view(torch.int16).numpy()
    value = pb.Value(
        tensor_value=pb.Tensor(dtype=pb.DATA_TYPE_BFLOAT16, shape=[2], data=bits.tobytes())
    )
    np.testing.assert_array_equal(from_value(value), np.array([1.0, -3.25], np.float32))


def test_an_unset_value_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="no kind set"):
        from_value(pb.Value())


def test_a_tensor_whose_data_does_not_fit_its_shape_is_invalid_argument() -> None:
    value = pb.Value(
        tensor_value=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[2, 2], data=b"\0" * 8)
    )
    with pytest.raises(InvalidArgument, match=r"shape \[2, 2\] needs 4 elements"):
        from_value(value)


def tensor(dtype: pb.DataType.ValueType, shape: list[int], data: bytes) -> pb.Value:
    return pb.Value(tensor_value=pb.Tensor(dtype=dtype, shape=shape, data=data))


def test_bfloat16_data_of_an_odd_length_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="bfloat16 tensor data is 3 bytes, not a multiple"):
        from_value(tensor(pb.DATA_TYPE_BFLOAT16, [1], b"\0" * 3))


@pytest.mark.parametrize(
    ("dtype", "itemsize"),
    [(pb.DATA_TYPE_FLOAT32, 4), (pb.DATA_TYPE_BFLOAT16, 2)],
    ids=["float32", "bfloat16"],
)
def test_a_negative_dimension_is_invalid_argument(
    dtype: pb.DataType.ValueType, itemsize: int
) -> None:
    # -1 x -2 multiplies to the 2 elements the data holds: the size check alone passes it
    with pytest.raises(InvalidArgument, match=r"shape \[-1, -2\] has a negative dimension"):
        from_value(tensor(dtype, [-1, -2], b"\0" * 2 * itemsize))


def test_huge_dimensions_do_not_wrap_around_in_the_size_check() -> None:
    # 2**32 * 2**32 is 0 in int64 arithmetic, which empty data would have matched
    with pytest.raises(InvalidArgument, match="needs 18446744073709551616 elements, data holds 0"):
        from_value(tensor(pb.DATA_TYPE_FLOAT32, [2**32, 2**32], b""))


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([1] * 65, b"\0" * 4, "maximum supported dimension"),  # more dims than numpy allows
        ([2**40, 0, 2**40], b"", "too big"),  # empty, yet too large for numpy to describe
    ],
    ids=["too-many-dimensions", "too-big"],
)
def test_a_shape_numpy_cannot_hold_is_invalid_argument(
    shape: list[int], data: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"is not supported: .*{message}"):
        from_value(tensor(pb.DATA_TYPE_FLOAT32, shape, data))


def test_a_tensor_without_dtype_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="DataType"):
        from_value(pb.Value(tensor_value=pb.Tensor(shape=[1], data=b"\0")))


def test_unencodable_objects_raise_type_error() -> None:
    with pytest.raises(TypeError, match="cannot encode a set"):
        to_value({1, 2})
    with pytest.raises(TypeError, match="map keys must be strings"):
        to_value({1: "a"})


def test_jsonable_shows_tensors_and_bytes_readably() -> None:
    import json

    from modelyard.values import jsonable

    text = json.dumps({"e": np.arange(20, dtype=np.float32), "b": b"xyz"}, default=jsonable)
    shown = json.loads(text)
    assert shown["e"]["dtype"] == "float32" and shown["e"]["shape"] == [20]
    assert shown["e"]["values"][:2] == [0.0, 1.0] and shown["e"]["values"][-1] == "..."
    assert shown["b"] == {"bytes": 3}
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        json.dumps({1, 2}, default=jsonable)


@given(arrays)
def test_a_tensor_written_as_a_nested_list_comes_back_as_that_tensor(
    array: np.ndarray[Any, Any],
) -> None:
    if array.ndim == 0:
        return  # a scalar is not a list
    back = tensor_from_list(array.tolist(), str(array.dtype))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array, equal_nan=array.dtype.kind == "f")


def test_lists_become_tensors_of_the_dtype_asked_for() -> None:
    floats = tensor_from_list([[1, 2.5], [3, 4]], "float32")  # ints are exact floats too
    assert floats.dtype == np.float32 and floats.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert tensor_from_list([True, False], "bool").tolist() == [True, False]
    assert tensor_from_list([[], []], "int64").shape == (2, 0)
    assert tensor_from_list([], "uint8").shape == (0,)


@pytest.mark.parametrize(
    ("items", "dtype", "problem"),
    [
        ([[1, 2], [3]], "float32", "the list is ragged: element [1] has 1 elements, not 2"),
        ([1, [2]], "float32", "the list is ragged: element [1] is a list, not a number"),
        ([[1], 2], "float32", "the list is ragged: element [1] is an integer, not a list of 1"),
        ([1, "2"], "float32", "element [1] is a string, not a number"),
        ([[0.5, True]], "float64", "element [0][1] is a bool, not a number"),
        ([1.0], "int32", "element [0] is a float, not an integer"),
        ([1, None], "int64", "element [1] is null, not an integer"),
        ([1], "bool", "element [0] is an integer, not a bool"),
        ([127, 128], "int8", "element [1] is out of the range of int8"),
        ([-1], "uint8", "element [0] is out of the range of uint8"),
        ([70000.0], "float16", "element [0] is out of the range of float16"),
        ([10**400], "float64", "element [0] is out of the range of float64"),
    ],
)
def test_nothing_is_guessed_when_a_list_is_made_a_tensor(
    items: list[Any], dtype: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        tensor_from_list(items, dtype)
