"""Count billable units per model, and money only where the user told us the price.

What a prediction is billed for is read from what the API reports, never guessed:

- ``metrics.image_count`` present: the model is billed **per output** (Replicate reports
  it for official image models such as flux-schnell); the unit is ``output``.
- ``metrics.input_token_count`` / ``output_token_count`` present: billed **per token**
  (official language models); the units are ``input_token`` and ``output_token``.
- otherwise: billed **per second** of ``metrics.predict_time`` on the prediction's
  hardware (its ``hardware`` field when the API gives one, else ``unknown``).

Failed predictions of public models are not billed (Replicate's billing docs); those of
deployments are, by the second. Canceled ones are billed up to the cancel.

A price table is a small YAML file the user writes::

    # USD per unit; a model's own line wins over its hardware's.
    models:
      black-forest-labs/flux-schnell: {output: 0.003}
      meta/meta-llama-3-70b-instruct: {input_token: 0.00000065, output_token: 0.00000275}
      stability-ai/sdxl: {second: 0.0014}
    hardware:
      gpu-a100-large: 0.0014   # per second, for any model billed by time on it

Usage without a price is reported as units with no money next to it: we never claim a
price we do not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine._errors import ConfigError
from engine._prediction import Prediction, PredictionStatus
from engine._wording import plural
from jobs import ModelRef

__all__ = [
    "UNITS",
    "Estimate",
    "PriceTable",
    "Usage",
    "billable_units",
    "billing_rows",
    "load_prices",
    "model_label",
]

UNITS = ("output", "input_token", "output_token", "second")
UNKNOWN_HARDWARE = "unknown"


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices in one currency per unit: per model (and unit), and per second by hardware."""

    models: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    hardware: Mapping[str, float] = field(default_factory=dict)
    currency: str = "USD"

    def price(self, model: str, unit: str, hardware: str | None) -> float | None:
        """Return the price of one ``unit`` of ``model`` on ``hardware``; None if unknown."""
        own = self.models.get(model, {})
        if unit in own:
            return own[unit]
        if unit == "second" and hardware is not None:
            return self.hardware.get(hardware)
        return None


def model_label(ref: ModelRef) -> str:
    """Return the name prices and reports use: ``owner/name`` or ``deployments/owner/name``.

    No version: a price is the model's, whichever version runs.
    """
    return f"deployments/{ref.slug}" if ref.deployment else ref.slug


def load_prices(path: Path) -> PriceTable:
    """Read a price table; raise `ConfigError` naming what is wrong and where."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read price table {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"price table {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) - {"models", "hardware", "currency"}:
        raise ConfigError(f"price table {path}: expected keys 'models', 'hardware', 'currency'")
    models: dict[str, dict[str, float]] = {}
    for model, prices in (raw.get("models") or {}).items():
        if not isinstance(prices, dict) or not prices:
            raise ConfigError(f"price table {path}: {model}: expected {{unit: price}}")
        models[str(model)] = {
            _unit(path, model, unit): _price(path, f"{model}.{unit}", value)
            for unit, value in prices.items()
        }
    hardware = {
        str(sku): _price(path, f"hardware.{sku}", value)
        for sku, value in (raw.get("hardware") or {}).items()
    }
    return PriceTable(models, hardware, str(raw.get("currency") or "USD"))


def _unit(path: Path, model: object, unit: object) -> str:
    if unit not in UNITS:
        raise ConfigError(
            f"price table {path}: {model}: unknown unit {unit!r}; use one of {', '.join(UNITS)}"
        )
    return str(unit)


def _price(path: Path, where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"price table {path}: {where}: expected a price >= 0, got {value!r}")
    return float(value)


def billable_units(
    prediction: Prediction, *, deployment: bool = False
) -> list[tuple[str, str | None, float]]:
    """Return ``(unit, hardware, amount)`` for what ``prediction`` is billed, per the API."""
    metrics = prediction.metrics or {}
    status = prediction.status
    if status is PredictionStatus.FAILED and not deployment:
        return []  # failed runs of public models are not billed
    images = metrics.get("image_count")
    if isinstance(images, int) and not isinstance(images, bool):
        return [("output", None, float(images))] if status is PredictionStatus.SUCCEEDED else []
    counts = (("input_token", "input_token_count"), ("output_token", "output_token_count"))
    tokens: list[tuple[str, str | None, float]] = [
        (unit, None, float(metrics[key]))
        for unit, key in counts
        if isinstance(metrics.get(key), int | float)
    ]
    if tokens:
        return tokens
    seconds = prediction.predict_time
    if seconds is None:
        return []
    return [("second", prediction.hardware or UNKNOWN_HARDWARE, seconds)]


@dataclass(slots=True)
class Usage:
    """Billable units of one run, per (model, unit, hardware), and what they cost if known."""

    prices: PriceTable | None = None
    units: dict[tuple[str, str, str | None], float] = field(default_factory=dict)
    spent: float = 0.0  # money of the priced units only

    def record(self, model: str, prediction: Prediction, *, deployment: bool = False) -> None:
        """Add what ``prediction`` (of ``model``, ``owner/name``) is billed for."""
        for unit, hardware, amount in billable_units(prediction, deployment=deployment):
            key = (model, unit, hardware)
            self.units[key] = self.units.get(key, 0.0) + amount
            price = self.prices.price(model, unit, hardware) if self.prices else None
            if price is not None:
                self.spent += price * amount

    def to_json(self) -> dict[str, Any]:
        """Return the billing part of the report: one line per model, unit and hardware."""
        lines = []
        unpriced = 0
        for (model, unit, hardware), amount in sorted(
            self.units.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
        ):
            price = self.prices.price(model, unit, hardware) if self.prices else None
            unpriced += price is None
            lines.append(
                {
                    "model": model,
                    "unit": unit,
                    "hardware": hardware,
                    "amount": round(amount, 6),
                    "price": price,
                    "cost": None if price is None else price * amount,
                }
            )
        return {
            "lines": lines,
            "currency": self.prices.currency if self.prices else None,
            "priced_cost": self.spent if self.prices else None,
            "unpriced_lines": unpriced,
        }


_UNIT_NOUNS = {"output": "output", "input_token": "input token", "output_token": "output token"}


def billing_rows(billing: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Return the summary's rows for the billing part of a report: units, then money."""
    if not billing or not billing["lines"]:
        return []
    rows = []
    currency = billing["currency"] or ""
    for line in billing["lines"]:
        amount = line["amount"]
        if line["unit"] == "second":
            what = f"{amount:.1f} s predict time"
        else:  # outputs and tokens are whole numbers
            what = plural(round(amount), _UNIT_NOUNS[line["unit"]])
        if line["unit"] == "output":
            what += " (billed per output)"
        if line["unit"] == "second":
            hardware = line["hardware"]
            what += (
                f" on {hardware}" if hardware != UNKNOWN_HARDWARE else " (hardware not reported)"
            )
        if line["cost"] is not None:
            what += f" = {line['cost']:.4f} {currency}"
        elif billing["currency"] is not None:
            what += " (no price)"
        rows.append((f"billable: {line['model']}", what))
    if billing["priced_cost"] is not None:
        total = f"{billing['priced_cost']:.4f} {currency}"
        if billing["unpriced_lines"]:
            total += f" + {plural(billing['unpriced_lines'], 'line')} without a price"
        rows.append(("spend", total))
    return rows


@dataclass(slots=True)
class Estimate:
    """What the pending jobs of a manifest would cost, where that can be known before.

    Per-output prices: the job's ``num_outputs`` (else the schema's default, else 1) times
    the price. Per-second prices: the mean ``predict_time`` of the same model's jobs already
    done in the journal, times the price. Anything else is counted as not estimated.
    """

    prices: PriceTable
    money: float = 0.0
    estimated_jobs: int = 0
    unestimated: dict[str, int] = field(default_factory=dict)  # model -> pending jobs
    _pending_seconds: dict[str, int] = field(default_factory=dict)  # model -> jobs to time
    _seen_seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(
        self,
        model: str,
        inputs: Mapping[str, Any],
        schema: Mapping[str, Any] | None,
        *,
        done_predict_time: float | None = None,
        pending: bool = True,
    ) -> None:
        """Count one job of ``model``; a done one only lends its predict time."""
        if done_predict_time is not None:
            self._seen_seconds.setdefault(model, []).append(done_predict_time)
        if not pending:
            return
        per_output = self.prices.price(model, "output", None)
        if per_output is not None:
            self.money += per_output * _outputs(inputs, schema)
            self.estimated_jobs += 1
        elif self.prices.price(model, "second", None) is not None:
            self._pending_seconds[model] = self._pending_seconds.get(model, 0) + 1
        else:
            self.unestimated[model] = self.unestimated.get(model, 0) + 1

    def to_json(self) -> dict[str, Any]:
        """Return the estimate; per-second models without earlier timings stay unestimated."""
        money, jobs, unestimated = self.money, self.estimated_jobs, dict(self.unestimated)
        for model, count in self._pending_seconds.items():
            seen = self._seen_seconds.get(model)
            price = self.prices.price(model, "second", None)
            if seen and price is not None:
                money += price * count * sum(seen) / len(seen)
                jobs += count
            else:
                unestimated[model] = unestimated.get(model, 0) + count
        return {
            "currency": self.prices.currency,
            "estimated_cost": money,
            "estimated_jobs": jobs,
            "unestimated_jobs": unestimated,
        }


def _outputs(inputs: Mapping[str, Any], schema: Mapping[str, Any] | None) -> int:
    value = inputs.get("num_outputs")
    if value is None and schema is not None:
        value = (schema.get("properties") or {}).get("num_outputs", {}).get("default")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
