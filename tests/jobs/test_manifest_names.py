"""Planned names: unique across the manifest, clear of the engine's files, portable."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import ENGINE_FILES, ManifestError, check_manifest, check_output_stem, read_manifest
from jobs.names import roots, tail_owns
from tests.jobs.helpers import Write, assert_located, manifest_error

FLUX = "black-forest-labs/flux-schnell"


def jsonl(write: Write, *jobs: dict[str, object]) -> object:
    return write("m.jsonl", "".join(json.dumps({"model": FLUX, **j}) + "\n" for j in jobs))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"id": "a"}, {"id": "a_0"}),  # a with several outputs writes a_0.png
        ({"id": "a_0"}, {"id": "a"}),  # ... in either order
        ({"id": "a"}, {"id": "a.image"}),  # a with an object output writes a.image.png
        ({"id": "a.image"}, {"id": "a"}),
        ({"id": "a"}, {"id": "a_1_2"}),
        ({"id": "a"}, {"id": "a.x_0.y"}),
        ({"id": "A"}, {"id": "a"}),  # case-insensitive file systems
        ({"id": "a"}, {"id": "A_0"}),
        ({"id": "Cat.Image"}, {"id": "cat"}),
        ({"id": "a"}, {"input": {"n": 1}, "output": "a.png/x"}),  # a folder named a.png
        ({"input": {"n": 1}, "output": "a.png/x"}, {"id": "a"}),
        ({"input": {"n": 1}, "output": "d/a"}, {"input": {"n": 2}, "output": "D/A_3"}),
        ({"id": "x"}, {"input": {"n": 1}, "output": "x_{index}"}),
    ],
)
def test_stems_whose_names_could_meet_are_refused_naming_both_lines(
    write: Write, first: dict[str, object], second: dict[str, object]
) -> None:
    path = jsonl(write, first, second)
    error = manifest_error(path)
    assert error.line == 2
    assert error.field == "output"
    assert "line 1" in error.message


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"id": "a"}, {"id": "a_b"}),  # a_b.png is not a name a can write
        ({"id": "a"}, {"id": "a_1x"}),
        ({"id": "a_1"}, {"id": "a_12"}),
        ({"id": "a"}, {"id": "ab"}),
        ({"id": "a"}, {"id": "b.a"}),
        ({"id": "a"}, {"input": {"n": 1}, "output": "a/x"}),  # a folder a beside a.png
        ({"input": {"n": 1}, "output": "x/a"}, {"input": {"n": 2}, "output": "y/a"}),
        ({"id": "a-0"}, {"id": "a"}),
    ],
)
def test_stems_whose_names_cannot_meet_are_accepted(
    write: Write, first: dict[str, object], second: dict[str, object]
) -> None:
    assert len(list(read_manifest(jsonl(write, first, second)))) == 2


def test_yaml_names_both_lines_and_the_field(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        jobs:
          - id: a
            model: {FLUX}
            input: {{num_outputs: 2}}
          - id: a_0
            model: {FLUX}
        """,
    )
    assert_located(
        manifest_error(path), path, 5, "jobs[1].output", "lies among the names of the job at line 2"
    )


@pytest.mark.parametrize(
    ("stem", "taken"),
    [
        ("journal", "journal.jsonl"),
        ("JOURNAL", "journal.jsonl"),
        ("journal_0", "journal.jsonl"),
        ("journal.jsonl", "journal.jsonl"),
        ("report", "report.json"),
        ("report.x", "report.json"),
        ("index", "index.html"),
        ("Index_2", "index.html"),
        ("index.html/x", "index.html"),
        (".manifest-checked", ".manifest-checked.json"),
        (".Manifest-Checked.json", ".manifest-checked.json"),
        (".manifest-checked2", ".manifest-checked.json"),
    ],
)
def test_the_engines_names_are_reserved_at_the_root(write: Write, stem: str, taken: str) -> None:
    path = jsonl(write, {"input": {"n": 1}, "output": stem})
    error = manifest_error(path)
    assert error.field == "output"
    assert f"engine's {taken}" in error.message


@pytest.mark.parametrize(
    "stem", ["runs/journal", "journals", "reports/report", "index-1", "x.index"]
)
def test_the_engines_names_are_free_elsewhere(write: Write, stem: str) -> None:
    assert len(list(read_manifest(jsonl(write, {"output": stem})))) == 1


def test_reserved_names_live_in_one_place() -> None:
    assert ENGINE_FILES.reserved_stems == ("journal", "report", "index")
    assert ENGINE_FILES.sidecar("a/b") == "a/b.info.json"


def test_a_check_finds_every_clash(write: Write) -> None:
    path = jsonl(write, {"id": "a"}, {"id": "a_0"}, {"id": "b"}, {"id": "a.x"}, {"id": "B"})
    summary = check_manifest(path)
    assert [e.line for e in summary.errors] == [2, 4, 5]
    assert summary.jobs == 2


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("id", "con", "device name"),
        ("id", "Aux.x", "device name"),
        ("id", "a.", "ending in a dot"),
        ("output", "x/{id}:1", "':'"),
        ("output", "x/lpt1/{id}", "device name"),
        ("output", "what?/{id}", "'?'"),
        ("output", "a /{id}", "ending in a dot or space"),
        ("output", "<{id}>", "'<'"),
        ("output", '"{id}"', "'\"'"),
        ("output", "a|{id}", "'|'"),
        ("output", "a*{id}", "'*'"),
    ],
)
def test_names_that_break_on_windows_are_refused(
    write: Write, field: str, value: str, fragment: str
) -> None:
    path = jsonl(write, {field: value})
    error = manifest_error(path)
    assert (error.line, error.field) == (1, field)
    assert fragment in error.message


stems = (
    st.lists(st.sampled_from(["a", "b", "_0", "_1", ".x", ".png", "/", "A"]), max_size=5)
    .map("".join)
    .filter(lambda stem: check_output_stem(stem) is None)
)


def _meet(one: str, two: str) -> bool:
    """Tell, by brute force over names each can write, whether two stems' files can meet."""

    def names(stem: str) -> set[str]:
        tails = ["", "_0", "_1", "_0_1", ".x", "_0.x", ".png"]
        return {f"{stem}{t}.png".casefold() for t in tails}

    def folders(stem: str) -> set[str]:
        parts = stem.casefold().split("/")
        return {"/".join(parts[: i + 1]) for i in range(len(parts) - 1)}

    return bool(
        names(one) & names(two)
        or folders(one) & names(two)
        or folders(two) & names(one)
        or one.casefold() == two.casefold()
    )


@given(one=stems, two=stems)
def test_the_namespace_rule_refuses_every_pair_that_can_meet(one: str, two: str) -> None:
    clash = (
        one.casefold() == two.casefold()
        or one.casefold() in roots(two)
        or two.casefold() in roots(one)
    )
    if _meet(one, two):
        assert clash, (one, two)


@given(st.text(alphabet="a_0.1/", max_size=10))
def test_roots_are_stems_the_name_extends(stem: str) -> None:
    for root in roots(stem):
        assert stem.casefold().startswith(root)
        rest = stem.casefold()[len(root) :].split("/", 1)[0]
        assert tail_owns(rest)


def test_errors_are_manifest_errors(write: Write) -> None:
    with pytest.raises(ManifestError):
        list(read_manifest(jsonl(write, {"id": "a"}, {"id": "a_0"})))


@given(one=stems, two=stems)
def test_a_manifest_with_two_stems_whose_files_can_meet_is_refused(
    tmp_path_factory: pytest.TempPathFactory, one: str, two: str
) -> None:
    folder = tmp_path_factory.mktemp("m")
    path = folder / "m.jsonl"
    jobs = [{"model": FLUX, "input": {"n": n}, "output": stem} for n, stem in enumerate((one, two))]
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    summary = check_manifest(path)
    reserved = any(
        r in ENGINE_FILES.reserved_stems or r.startswith(ENGINE_FILES.stamp_prefix)
        for stem in (one, two)
        for r in [stem.casefold(), *roots(stem)]
    )
    if _meet(one, two) or reserved:
        assert not summary.ok
    elif not summary.ok:
        # Refused although the few tails tried above found no meeting: an object key can
        # still make one (a writes a.xa.png for {"xa": url}), or a folder lies above.
        assert one.casefold() in roots(two) or two.casefold() in roots(one), (one, two)


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ("caf\u00e9", "cafe\u0301"),  # composed and decomposed: one file on macOS
        ("\u00c9t\u00e9", "e\u0301t\u00e9_0"),
        ("Stra\u00dfe", "STRASSE"),  # casefold, as the namespace rule says
    ],
)
def test_names_are_compared_as_file_systems_do(write: Write, one: str, two: str) -> None:
    path = jsonl(write, {"input": {"n": 1}, "output": one}, {"input": {"n": 2}, "output": two})
    assert manifest_error(path).line == 2
