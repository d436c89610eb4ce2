"""The one redaction masks a token cut by line breaks, and no more than it must."""

from __future__ import annotations

import pytest

from engine._redact import MASK, redact

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
