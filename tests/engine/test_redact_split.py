"""The one redaction masks a token cut by line breaks, and no more than it must."""

from __future__ import annotations

import pytest

from engine._redact import MASK, looks_secret, redact

R8 = "r8_" + "Q7x2Lk9Zp4Wm1Nc8Vb3Hd6Jf0Tg5Rs2Ye7Ua9I"
OTHER = "custom-Secret-0123456789-abcdefghij"


@pytest.mark.parametrize("cut", [3, 10, 20, 39])
@pytest.mark.parametrize("gap", ["\n", "\r\n", "\n   ", " \n\t"])
def test_an_r8_token_cut_anywhere_is_masked_whole(cut: int, gap: str) -> None:
    text = f"header: {R8[:cut]}{gap}{R8[cut:]} end"
    assert redact(text) == f"header: {MASK} end"


def test_a_whole_r8_token_keeps_the_next_line() -> None:
    assert redact(f"{R8}\nnext line") == f"{MASK}\nnext line"


@pytest.mark.parametrize("gap", ["\n", " ", "\n  ", "\r\n"])
def test_the_callers_own_token_is_masked_across_breaks(gap: str) -> None:
    text = f"echo {OTHER[:9]}{gap}{OTHER[9:]} done"
    assert redact(text, secret=OTHER) == f"echo {MASK} done"


def test_text_without_the_token_is_unchanged() -> None:
    text = "a model failed:\n  CUDA out of memory"
    assert redact(text, secret=OTHER) == text


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"Authorization: Bearer {JWT}", f"Authorization: Bearer {MASK}"),
        ("authorization: token abc", f"authorization: token {MASK}"),
        (f"got bearer {JWT} back", f"got bearer {MASK} back"),
        (f"token={OTHER}xyz", f"token={MASK}"),
        (f"('{R8}')", f"('{MASK}')"),
        ("model 'r8_SECRETMODEL/flux' not found", f"model '{MASK}/flux' not found"),
    ],
)
def test_credentials_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked
    assert looks_secret(text)


@pytest.mark.parametrize(
    "text",
    [
        "job.done job=bearer prediction_id=gm3qorzdhgbfurvjtvhg6dckhu",  # an id, not a key
        "the Replicate API token contains whitespace or characters a token cannot have",
        "bearer bonds and token economies",
        "token 12345678",  # short: a count, a code, not a credential
        "chr8_variant and r8-like words",
        "Authorization: Bearer [REDACTED]",  # masked once already
    ],
)
def test_ordinary_words_are_kept(text: str) -> None:
    assert redact(text) == text
    assert not looks_secret(text)
