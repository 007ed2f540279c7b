"""Device-tag selectors: the grammar, each operator, sizes, and every malformed form."""

from __future__ import annotations

import pytest

from modelyard.errors import InvalidArgument
from modelyard.selectors import parse_quantity, parse_selector

GPU = {
    "device": "cuda",
    "gpu_name": "NVIDIA A100-SXM4-40GB",
    "gpu_memory": "42949672960",  # 40 GiB, as workers report it (bytes)
    "gpu_count": "2",
    "zone": "eu-1",
}
CPU = {"device": "cpu", "host_memory": "16GB", "cpu_count": "8"}


def test_empty_selector_matches_everything() -> None:
    for text in ("", "  "):
        selector = parse_selector(text)
        assert selector.terms == ()
        assert str(selector) == ""
        assert selector.matches({}) and selector.matches(GPU)


@pytest.mark.parametrize(
    ("text", "gpu", "cpu"),
    [
        ("device=cuda", True, False),
        ("device!=cuda", False, True),
        ("gpu_name=NVIDIA A100-SXM4-40GB", True, False),  # values may hold inner spaces
        ("gpu_count>1", True, False),
        ("gpu_count>2", False, False),
        ("gpu_count>=2", True, False),
        ("gpu_count<2", False, False),
        ("gpu_count<=2", True, False),
        ("cpu_count<=8", False, True),
        ("gpu_name", True, False),
        ("!gpu_name", False, True),
    ],
)
def test_each_operator(text: str, gpu: bool, cpu: bool) -> None:
    selector = parse_selector(text)
    assert selector.matches(GPU) is gpu
    assert selector.matches(CPU) is cpu


def test_not_equal_matches_a_worker_without_the_tag() -> None:
    # Kubernetes' label-selector semantics: "not in eu-1" includes workers naming no zone
    assert parse_selector("zone!=eu-1").matches(CPU)
    assert not parse_selector("zone!=eu-1").matches(GPU)
    assert not parse_selector("zone=eu-1").matches(CPU)


def test_terms_are_anded() -> None:
    assert parse_selector("device=cuda,gpu_memory>=16GiB,zone!=us-2").matches(GPU)
    assert not parse_selector("device=cuda,gpu_memory>=64GiB").matches(GPU)
    assert not parse_selector("device=cuda,!gpu_name").matches(GPU)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16", 16),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e9", 1e9),
        ("-3", -3),
        ("7B", 7),
        ("2KB", 2000),
        ("2kb", 2000),
        ("3MB", 3e6),
        ("16GB", 16e9),
        ("1TB", 1e12),
        ("2KiB", 2048),
        ("1MiB", 1024**2),
        ("16GiB", 16 * 1024**3),
        ("16 gib", 16 * 1024**3),
        ("1.5TiB", 1.5 * 1024**4),
    ],
)
def test_sizes_and_numbers(text: str, value: float) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "16XB", "GiB", "1.2.3", "16 GiB extra"])
def test_not_a_quantity(text: str) -> None:
    assert parse_quantity(text) is None


def test_units_on_both_sides() -> None:
    assert parse_selector("gpu_memory>=40GiB").matches(GPU)
    assert not parse_selector("gpu_memory>40GiB").matches(GPU)
    assert parse_selector("gpu_memory>42.9GB").matches(GPU)
    assert parse_selector("host_memory>=16000MB").matches(CPU)  # a tag with a unit
    assert parse_selector("host_memory<15GiB").matches(CPU)  # 16 GB is under 15 GiB (16.1e9)


def test_numeric_operator_on_a_non_numeric_or_absent_tag_does_not_match() -> None:
    assert not parse_selector("device>=1").matches(GPU)
    assert not parse_selector("device<1").matches(GPU)
    assert not parse_selector("gpu_memory>=1").matches(CPU)


def test_equality_compares_strings_not_numbers() -> None:
    assert not parse_selector("gpu_count=2.0").matches(GPU)
    assert parse_selector("gpu_count=2").matches(GPU)


def test_canonical_form_is_sorted_deduplicated_and_stripped() -> None:
    a = parse_selector(" zone!=eu-1 , device = cuda,gpu_memory>=16GiB,!spot,gpu_name,device=cuda")
    b = parse_selector("device=cuda,gpu_memory>=16GiB,gpu_name,!spot,zone!=eu-1")
    assert str(a) == "device=cuda,gpu_memory>=16GiB,gpu_name,!spot,zone!=eu-1"
    assert a == b and hash(a) == hash(b)
    assert parse_selector(str(a)) == a


def test_selector_is_immutable() -> None:
    selector = parse_selector("device=cuda")
    with pytest.raises(AttributeError):
        selector.terms = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "gpu_memory>=lots",
            "selector term 'gpu_memory>=lots' needs a number or size after '>='",
        ),
        ("gpu_memory<16XB", "selector term 'gpu_memory<16XB' needs a number or size after '<'"),
        ("device=", "selector term 'device=' needs a value after '='"),
        ("zone!= ", "selector term 'zone!=' needs a value after '!='"),
        ("=cuda", "selector term '=cuda' needs a tag name before '='"),
        (">=4", "selector term '>=4' needs a tag name before '>='"),
        ("!", "selector term '!' needs a tag name after '!'"),
        ("device=cuda,,zone=x", "selector 'device=cuda,,zone=x' has an empty term"),
        ("device=cuda,", "selector 'device=cuda,' has an empty term"),
        ("a==b", "selector term 'a==b' has more than one operator"),
        ("a=b=c", "selector term 'a=b=c' has more than one operator"),
        ("a=>1", "selector term 'a=>1' has more than one operator"),
        ("!gpu_name=x", "selector term '!gpu_name=x' mixes '!' with '='"),
        ("gpu name=x", "selector term 'gpu name=x' has an invalid tag name 'gpu name'"),
        ("device~cuda", "selector term 'device~cuda' has an invalid tag name 'device~cuda'"),
        ("!gpu$", "selector term '!gpu$' has an invalid tag name 'gpu$'"),
    ],
)
def test_malformed_selectors_name_the_term_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_selector(text)
    assert caught.value.message.startswith(message), caught.value.message
