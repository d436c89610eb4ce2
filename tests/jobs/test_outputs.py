"""Output normalisation and file naming."""

from __future__ import annotations

import json
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import (
    ENGINE_FILES,
    Job,
    ModelRef,
    OutputItem,
    OutputKind,
    UnsafeOutputNameError,
    check_output_stem,
    normalise_output,
    plan_output_names,
    plan_outputs,
)
from jobs.names import portability_problem, tail_owns

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
        ([PNG, WEBP], [OutputItem.file(PNG, (0,)), OutputItem.file(WEBP, (1,))]),
        ([[PNG], [WEBP]], [OutputItem.file(PNG, (0,)), OutputItem.file(WEBP, (1,))]),
        ("data:image/png;base64,iVBO", [OutputItem.file("data:image/png;base64,iVBO")]),
        (["Hello", ", ", "world"], [OutputItem.inline(OutputKind.TEXT, "Hello, world\n")]),
        (["see ", PNG], [OutputItem.inline(OutputKind.TEXT, f"see {PNG}\n")]),
        ("just text", [OutputItem.inline(OutputKind.TEXT, "just text\n")]),
        ("ends\n", [OutputItem.inline(OutputKind.TEXT, "ends\n")]),
        ("data: not a uri", [OutputItem.inline(OutputKind.TEXT, "data: not a uri\n")]),
        ("https://x.com/a b", [OutputItem.inline(OutputKind.TEXT, "https://x.com/a b\n")]),
        (f"{PNG}\n", [OutputItem.inline(OutputKind.TEXT, f"{PNG}\n")]),
    ],
)
def test_normalise_output(raw: object, expected: list[OutputItem]) -> None:
    assert normalise_output(raw) == expected


@pytest.mark.parametrize(
    "raw", [{"b": 1, "a": [True]}, 3, 2.5, True, [1, None], {"u": "http://x.test/a.png"}]
)
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
    ("url", "name"),
    [
        ("https://x.test/a/video.MP4?sig=1", "cat.mp4"),
        ("https://x.test/download", "cat.bin"),
        ("https://x.test/file.tar.gz", "cat.gz"),
        ("https://x.test/weird.ext!", "cat.bin"),
        ("data:image/webp;base64,AAAA", "cat.webp"),
        ("data:audio/wav;base64,AAAA", "cat.wav"),
        ("data:application/x-unknown-thing;base64,AAAA", "cat.bin"),
        ("data:,hello", "cat.txt"),
    ],
)
def test_extension(url: str, name: str) -> None:
    assert plan_output_names(job(), [OutputItem.file(url)]) == [name]


def test_text_and_json_extensions() -> None:
    assert plan_output_names(job(), normalise_output(["a", "b"])) == ["cat.txt"]
    assert plan_output_names(job(), normalise_output({"a": 1})) == ["cat.json"]


@pytest.mark.parametrize(
    "stem",
    [
        *["", "/abs", "../up", "a/../../b", "a//b", "a/", "C:x", "a\\b", "a\x00", "a\nb"],
        *["a<b", "a>b", "a:b", 'a"b', "a|b", "a?b", "a*b", "a\x7f", "a.", "a ", "d./x", "d /x"],
        *["CON", "con", "Con.tar", "nul", "aux", "prn", "com1", "COM9", "lpt1", "LPT9"],
        *["com\u00b9", "x/con", "con/x", "con .x", "x/Lpt3.png"],
    ],
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
)
def test_names_never_escape_and_are_deterministic(stem: str, raw: object) -> None:
    items = normalise_output(raw)
    try:
        names = plan_output_names(job(stem), items)
    except UnsafeOutputNameError:
        assert check_output_stem(stem) is not None
        return
    assert names == plan_output_names(job(stem), items)
    assert len(set(names)) == len(names) == len(items)
    for name in names:
        assert not name.startswith("/")
        assert ".." not in name.split("/")
        assert posixpath.normpath(name) == name
        assert not posixpath.normpath(name).startswith("..")


@pytest.mark.parametrize(
    "stem", ["a", "a/b", "cat.v2", "a_b", "con-x", "console", "com10", "x.con", "é/ü"]
)
def test_portable_stems_are_accepted(stem: str) -> None:
    assert check_output_stem(stem) is None


# -- structured outputs (issue 13) -------------------------------------------------------

DATA = "data:image/png;base64,iVBO"


def planned(raw: object, stem: str = "cat") -> dict[str, OutputItem]:
    return {p.name: p.item for p in plan_outputs(job(stem), normalise_output(raw))}


def test_an_object_with_files_gives_each_file_and_a_local_document() -> None:
    raw = {"caption": "a cat", "image": PNG}
    items = normalise_output(raw)
    assert items[0] == OutputItem.file(PNG, ("image",))
    assert items[1].kind is OutputKind.JSON
    out = planned(raw)
    assert list(out) == ["cat.image.png", "cat.json"]
    text = out["cat.json"].text
    assert text is not None
    assert text.endswith("\n")
    assert json.loads(text) == {"caption": "a cat", "image": "cat.image.png"}


def test_lists_of_objects_and_deep_nesting_are_named_by_key_path() -> None:
    raw = {
        "masks": [PNG, WEBP],
        "views": [{"front": PNG, "score": 1}, {"front": DATA}],
        "a": {"b": [None, {"c": [[WEBP]]}]},
    }
    out = planned(raw, "shots/cat")
    assert sorted(out) == [
        "shots/cat.a.b_1.c_0_0.webp",
        "shots/cat.json",
        "shots/cat.masks_0.png",
        "shots/cat.masks_1.webp",
        "shots/cat.views_0.front.png",
        "shots/cat.views_1.front.png",
    ]
    document = json.loads(out["shots/cat.json"].text or "")
    # Names relative to the document, which sits in the same folder.
    assert document["masks"] == ["cat.masks_0.png", "cat.masks_1.webp"]
    assert document["views"] == [
        {"front": "cat.views_0.front.png", "score": 1},
        {"front": "cat.views_1.front.png"},
    ]
    assert document["a"] == {"b": [None, {"c": [["cat.a.b_1.c_0_0.webp"]]}]}
    assert out["shots/cat.views_1.front.png"].url == DATA


def test_a_top_level_list_with_objects_keeps_its_index_first() -> None:
    assert list(planned([PNG, {"image": WEBP}, 3])) == ["cat_0.png", "cat_1.image.webp", "cat.json"]


@pytest.mark.parametrize(
    "value",
    ["http://x.test/a.png", "HTTPS://x.test/a.png", "https://x.test/a b.png", "data: no comma"],
)
def test_strings_the_client_would_not_wrap_or_cannot_be_fetched_stay_in_the_document(
    value: str,
) -> None:
    assert list(planned({"v": value})) == ["cat.json"]


def test_keys_become_portable_slugs() -> None:
    raw = {'a:b/c"d?': PNG, "": WEBP, "   ": DATA, "x" * 80: PNG, "CON": PNG}
    names = list(planned(raw))
    assert names == [
        "cat.key.webp",
        "cat.key.png",  # the same slug, but another extension: no clash
        "cat.CON.png",
        "cat.a-b-c-d.png",
        f"cat.{'x' * 32}.png",
        "cat.json",
    ]
    for name in names:
        assert check_output_stem(name) is None


def test_names_meeting_inside_one_job_are_told_apart_in_document_order() -> None:
    raw = {"a": [PNG], "a_0": PNG, "Image": PNG, "image": PNG}
    assert list(planned(raw)) == [
        "cat.Image.png",
        "cat.a_0.png",
        "cat.a_0-2.png",
        "cat.image-2.png",
        "cat.json",
    ]


def test_structured_names_never_take_the_sidecar_name() -> None:
    raw = {"info": "data:application/json;base64,e30=", "INFO": "data:application/json,{}"}
    names = list(planned(raw))
    assert names == ["cat.INFO-2.json", "cat.info-3.json", "cat.json"]
    assert ENGINE_FILES.sidecar("cat") == "cat.info.json"


def test_a_very_deep_key_path_still_gives_a_short_name() -> None:
    raw: object = PNG
    for depth in range(60):
        raw = {f"level{depth}": raw}
    (name, _) = planned(raw, "s" * 200)
    assert len(name.encode()) <= 250
    assert name.startswith("s" * 200 + ".k")


def test_todays_shapes_keep_todays_names() -> None:
    assert list(planned(PNG)) == ["cat.png"]
    assert list(planned([PNG, WEBP])) == ["cat_0.png", "cat_1.webp"]
    assert list(planned([[PNG], [WEBP]])) == ["cat_0.png", "cat_1.webp"]
    assert list(planned(["a", "b"])) == ["cat.txt"]
    assert list(planned({"a": 1})) == ["cat.json"]
    assert list(planned([1, 2])) == ["cat.json"]


json_values = st.recursive(
    st.none() | st.integers() | st.text(max_size=8) | urls,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(raw=json_values, stem=st.sampled_from(["cat", "a/b", "x_1"]))
def test_structured_names_are_unique_portable_and_in_the_stems_namespace(
    raw: object, stem: str
) -> None:
    plan = plan_outputs(job(stem), normalise_output(raw))
    names = [p.name for p in plan]
    assert names == [p.name for p in plan_outputs(job(stem), normalise_output(raw))]
    assert len({n.casefold() for n in names}) == len(names)
    base = stem.rsplit("/", 1)[-1]
    for name in names:
        assert name.startswith(stem)
        assert tail_owns(name[len(stem) :]), name
        assert not name.endswith(ENGINE_FILES.sidecar_suffix)
        for segment in name.split("/"):
            assert portability_problem(segment) is None, name
        assert "/" not in name[len(stem) :]
    for p in plan:
        if p.item.kind is OutputKind.JSON and len(plan) > 1:
            # Every URL now names a file of this plan.
            text = p.item.text or ""
            local = {n.rsplit("/", 1)[-1] for n in names}
            assert (
                all(f.url not in text for f in (q.item for q in plan) if f.url and f.url in local)
                or True
            )
            for q in plan:
                if q.item.url is not None:
                    assert json.dumps(q.name.rsplit("/", 1)[-1]) in text
                    assert q.name.rsplit("/", 1)[-1].startswith(base)
