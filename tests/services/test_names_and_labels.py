"""The one name check (tenants and adapters, each with its rule) and the one label-set check."""

from __future__ import annotations

import pytest

from services.errors import InvalidInput
from services.labels import check_labels
from services.names import NameKind, check_name


@pytest.mark.parametrize(("name", "kind"), [
    ("acme", NameKind.TENANT), ("acme-2", NameKind.TENANT), ("a" * 63, NameKind.TENANT),
    ("Support_v2", NameKind.ADAPTER), ("x" * 64, NameKind.ADAPTER)])
def test_good_names_pass(name, kind):
    assert check_name(name, kind) == name


@pytest.mark.parametrize(("name", "kind", "rule"), [
    ("Acme", NameKind.TENANT, "lowercase"), ("a" * 64, NameKind.TENANT, "1-63"),
    ("-acme", NameKind.TENANT, "starting with"), ("a_b", NameKind.TENANT, "lowercase"),
    ("x" * 65, NameKind.ADAPTER, "1-64"), ("a b", NameKind.ADAPTER, "'_' and '-'"),
    (None, NameKind.ADAPTER, "1-64")])
def test_bad_names_are_refused_with_the_rule(name, kind, rule):
    with pytest.raises(InvalidInput, match=f"{kind.label} name") as err:
        check_name(name, kind)
    assert rule in err.value.message and err.value.param == "name"


def test_labels_are_stripped():
    assert check_labels([" yes", "no "]) == ["yes", "no"]


@pytest.mark.parametrize(("labels", "problem"), [
    (["a"], "at least 2"), ([], "at least 2"), (None, "at least 2"), (["a", " "], "blank"),
    (["a", "b", "a"], "repeated: ['a']"), (["a", "a "], "repeated")])
def test_bad_label_sets_name_the_problem(labels, problem):
    with pytest.raises(InvalidInput, match="labels|label") as err:
        check_labels(labels)
    assert problem in err.value.message and err.value.param == "labels"


def test_label_sets_are_capped_in_count_and_length():
    many = [f"l{i}" for i in range(20_000)]
    with pytest.raises(InvalidInput, match="at most 64 labels.*TUNELOOP_MAX_LABELS"):
        check_labels(many, max_count=64)
    with pytest.raises(InvalidInput, match="at most 64 are allowed.*TUNELOOP_MAX_LABEL_CHARS"):
        check_labels(["a", "b" * 65], max_chars=64)
    assert check_labels(["a", "b" * 64], max_count=2, max_chars=64) == ["a", "b" * 64]
    assert len(check_labels(many)) == 20_000  # uncapped for label sets already stored


@pytest.mark.parametrize(("name", "kind"), [
    ("acme\n", NameKind.TENANT), ("support\n", NameKind.ADAPTER), ("acme\nx", NameKind.TENANT)])
def test_a_trailing_newline_is_not_part_of_a_valid_name(name, kind):
    with pytest.raises(InvalidInput, match=f"{kind.label} name"):
        check_name(name, kind)
