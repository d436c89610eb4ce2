"""Failures of one kind group together in the report whatever ids their messages carry."""

from __future__ import annotations

import pytest

from engine._stats import error_kind


@pytest.mark.parametrize(
    "prediction_id",
    [
        "k4n3xs3rmru5us75kzjr5i7ajm",  # base-32 with digits
        "qzquhyiydaiibanwqdgeywfprq",  # base-32 letters only: seen from the emulator
    ],
)
def test_a_prediction_id_is_masked(prediction_id: str) -> None:
    detail = f"ModelError: prediction {prediction_id} failed: CUDA out of memory"

    assert error_kind(detail) == "ModelError: prediction <id> failed: CUDA out of memory"


def test_words_stay() -> None:
    detail = "ModelError: the input image is too small for this model"

    assert error_kind(detail) == detail
