"""Output normalisation and file naming."""

from __future__ import annotations

import json
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import (
    Job,
    ModelRef,
    OutputItem,
    OutputKind,
    UnsafeOutputNameError,
    check_output_stem,
    normalise_output,
    plan_output_names,
)

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")
PNG = "https://replicate.delivery/abc/out-0.png"
WEBP = "https://replicate.delivery/abc/out-1.webp"


def job(output: str = "cat") -> Job:
    return Job(key="cat", model=FLUX, input={}, output=output)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ([], []),
        (PNG, [OutputItem.file(PNG)]),
        ([PNG, WEBP], [OutputItem.file(PNG), OutputItem.file(WEBP)]),
        ([[PNG], [WEBP]], [OutputItem.file(PNG), OutputItem.file(WEBP)]),
        ("data:image/png;base64,iVBO", [OutputItem.file("data:image/png;base64,iVBO")]),
        (["Hello", ", ", "world"], [OutputItem.inline(OutputKind.TEXT, "Hello, world")]),
        (["see ", PNG], [OutputItem.inline(OutputKind.TEXT, f"see {PNG}")]),
        ("just text", [OutputItem.inline(OutputKind.TEXT, "just text")]),
        ("data: not a uri", [OutputItem.inline(OutputKind.TEXT, "data: not a uri")]),
        ("https://x.com/a b", [OutputItem.inline(OutputKind.TEXT, "https://x.com/a b")]),
    ],
)
def test_normalise_output(raw: object, expected: list[OutputItem]) -> None:
    assert normalise_output(raw) == expected


@pytest.mark.parametrize("raw", [{"b": 1, "a": [True]}, 3, 2.5, True, [PNG, 1], [None, PNG]])
def test_other_values_become_one_json_document(raw: object) -> None:
    (item,) = normalise_output(raw)
    assert item.kind is OutputKind.JSON
    assert item.text is not None
    assert json.loads(item.text) == raw
    assert item.text.endswith("\n")


def test_output_item_needs_exactly_its_field() -> None:
    with pytest.raises(ValueError, match="exactly"):
        OutputItem(OutputKind.FILE, text="x")
    with pytest.raises(ValueError, match="exactly"):
        OutputItem(OutputKind.TEXT)


def test_one_item_is_named_after_the_stem() -> None:
    assert plan_output_names(job("portraits/cat"), normalise_output(PNG)) == ["portraits/cat.png"]


def test_several_items_are_numbered_from_zero() -> None:
    assert plan_output_names(job(), normalise_output([PNG, WEBP])) == ["cat_0.png", "cat_1.webp"]


@pytest.mark.parametrize(
    ("url", "content_type", "name"),
    [
        ("https://x.test/a/video.MP4?sig=1", None, "cat.mp4"),
        ("https://x.test/download", "image/jpeg", "cat.jpg"),
        ("https://x.test/download", "text/plain; charset=utf-8", "cat.txt"),
        ("https://x.test/download", "application/json", "cat.json"),
        ("https://x.test/download", "application/x-unknown-thing", "cat.bin"),
        ("https://x.test/download", None, "cat.bin"),
        ("https://x.test/file.tar.gz", None, "cat.gz"),
        ("https://x.test/weird.ext!", "image/webp", "cat.webp"),
        ("data:image/webp;base64,AAAA", None, "cat.webp"),
        ("data:audio/wav;base64,AAAA", "image/png", "cat.wav"),
        ("data:,hello", None, "cat.txt"),
    ],
)
def test_extension(url: str, content_type: str | None, name: str) -> None:
    assert plan_output_names(job(), [OutputItem.file(url)], [content_type]) == [name]


def test_text_and_json_extensions() -> None:
    assert plan_output_names(job(), normalise_output(["a", "b"])) == ["cat.txt"]
    assert plan_output_names(job(), normalise_output({"a": 1})) == ["cat.json"]


def test_content_types_must_match_items() -> None:
    with pytest.raises(ValueError, match="one entry per item"):
        plan_output_names(job(), normalise_output([PNG, WEBP]), ["image/png"])


@pytest.mark.parametrize(
    "stem", ["", "/abs", "../up", "a/../../b", "a//b", "a/", "C:x", "a\\b", "a\x00"]
)
def test_unsafe_stems_are_refused(stem: str) -> None:
    assert check_output_stem(stem) is not None
    with pytest.raises(UnsafeOutputNameError):
        plan_output_names(job(stem), normalise_output(PNG))


urls = st.one_of(
    st.builds(lambda p: f"https://x.test/{p}", st.text(max_size=30)),
    st.builds(lambda t: f"data:{t};base64,AA", st.sampled_from(["image/png", "video/mp4", "a/b"])),
)


@given(
    stem=st.text(max_size=40),
    raw=st.one_of(
        urls, st.lists(urls, max_size=5), st.text(), st.dictionaries(st.text(), st.integers())
    ),
    hint=st.none() | st.text(max_size=30),
)
def test_names_never_escape_and_are_deterministic(stem: str, raw: object, hint: str | None) -> None:
    items = normalise_output(raw)
    hints = [hint] * len(items)
    try:
        names = plan_output_names(job(stem), items, hints)
    except UnsafeOutputNameError:
        assert check_output_stem(stem) is not None
        return
    assert names == plan_output_names(job(stem), items, hints)
    assert len(set(names)) == len(names) == len(items)
    for name in names:
        assert not name.startswith("/")
        assert ".." not in name.split("/")
        assert posixpath.normpath(name) == name
        assert not posixpath.normpath(name).startswith("..")
