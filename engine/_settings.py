"""Turn run settings from flags, the environment and a settings file into config values.

One table names every run setting once: its flag, the `EngineConfig` field it sets, its
bounds and its help. The defaults are `EngineConfig`'s own field defaults, read from the
dataclass, never repeated here. Precedence is click's, which is rclone's: a flag beats its
``REPLICATE_BATCH_<FLAG>`` environment variable, which beats the settings file
(``--config PATH`` or ``REPLICATE_BATCH_CONFIG``), which beats the default. A bad value
from any source fails naming that source.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import yaml
from click.core import ParameterSource

from engine._config import MAX_CONCURRENCY, MAX_SETTLE, ApiConfig, EngineConfig

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "RUN_SETTINGS",
    "Option",
    "Setting",
    "api_settings",
    "bounded",
    "config_option",
    "given_settings",
    "ignored_variables",
    "option",
    "setting_options",
    "settings_file",
]

ENV_PREFIX = "REPLICATE_BATCH_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
_FILE_KEY = "replicate_batch_settings_file"  # where the settings file's path waits in ctx.meta

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Setting:
    """One run setting: a flag, the `EngineConfig` field it sets, and its bounds."""

    flag: str  # without dashes: "rate-limit"
    field: str  # EngineConfig field: "create_rate"
    kind: type[int] | type[float] | type[bool] | type[str]
    help: str
    metavar: str = ""
    minimum: float = 0.0
    inclusive: bool = True  # minimum allowed (>=) or excluded (>)
    maximum: float | None = None  # the largest value allowed (inclusive), if any
    api: bool = False  # an `ApiConfig` field (how each call is made), not an `EngineConfig` one
    choices: tuple[str, ...] = ()  # for a str setting: the words it takes

    @property
    def param(self) -> str:
        """Return click's parameter name (and the settings file's key)."""
        return self.flag.replace("-", "_")

    @property
    def envvar(self) -> str:
        """Return the environment variable that sets it."""
        return ENV_PREFIX + self.param.upper()

    @property
    def default(self) -> Any:
        """Return `EngineConfig`'s (or `ApiConfig`'s) default: the only default there is."""
        return (_API_FIELDS if self.api else _FIELDS)[self.field].default

    def shown_default(self) -> str:
        """Return the default as ``--help`` shows it."""
        value = self.default
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)


_FIELDS = {f.name: f for f in dataclasses.fields(EngineConfig)}
_API_FIELDS = {f.name: f for f in dataclasses.fields(ApiConfig)}

RUN_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "concurrency",
        "concurrency",
        int,
        f"Jobs in flight at once (at most {MAX_CONCURRENCY:,}).",
        "N",
        minimum=1,
        maximum=MAX_CONCURRENCY,
    ),
    Setting(
        "rate-limit",
        "create_rate",
        float,
        "Prediction creates per minute (Replicate's limit is 600).",
        "PER_MIN",
        inclusive=False,
    ),
    Setting(
        "read-rate-limit",
        "read_rate",
        float,
        "Every other API call per minute: polls, cancels, lists.",
        "PER_MIN",
        inclusive=False,
    ),
    Setting(
        "max-retries",
        "prediction_retries",
        int,
        "New predictions for a job after a transient model failure.",
        "N",
    ),
    Setting(
        "poll-interval",
        "poll_interval",
        float,
        "The fastest one prediction is polled, in seconds.",
        "SECONDS",
        inclusive=False,
    ),
    Setting(
        "on-changed",
        "on_changed",
        str,
        "A job with an explicit id whose model or input changed since it was journaled: "
        "run it again (old files kept as ID.before-<prediction>.ext) or only report it "
        "(exit 1).",
        choices=("rerun", "report"),
    ),
    Setting(
        "job-timeout",
        "job_timeout",
        float,
        "Seconds per prediction; sent as Cancel-After and enforced locally.",
        "SECONDS",
        inclusive=False,
    ),
    Setting(
        "deadline",
        "deadline",
        float,
        "Seconds for the whole run; then stop creating and drain.",
        "SECONDS",
        inclusive=False,
    ),
    Setting(
        "attempt-timeout",
        "attempt_timeout",
        float,
        "Seconds for one HTTP attempt (connect, TLS, answer); a download must move "
        "64 KiB in this long. A hung server cannot hold a call longer.",
        "SECONDS",
        inclusive=False,
        api=True,
    ),
    Setting(
        "shutdown-grace",
        "shutdown_grace",
        float,
        "After the first Ctrl-C/SIGTERM, work still running this long is stopped "
        "(journaled, resumed by the next run).",
        "SECONDS",
    ),
    Setting(
        "settle",
        "settle",
        float,
        "Seconds after sending a create whose answer was lost before its absence from "
        "the prediction list (which can lag) is believed and it is sent again.",
        "SECONDS",
        maximum=MAX_SETTLE,
    ),
    Setting(
        "max-predictions",
        "max_predictions",
        int,
        "Spending budget: stop creating after this many predictions.",
        "N",
    ),
    Setting(
        "max-predict-seconds",
        "max_predict_seconds",
        float,
        "Spending budget: stop creating after this much billed predict time.",
        "SECONDS",
        inclusive=False,
    ),
    Setting(
        "retry-failed",
        "retry_failed",
        bool,
        "Also run the jobs the journal records as failed.",
    ),
    Setting(
        "cancel-on-exit",
        "cancel_on_exit",
        bool,
        "The first Ctrl-C also cancels running predictions.",
    ),
)
_BY_PARAM = {s.param: s for s in RUN_SETTINGS}
# The other REPLICATE_BATCH_* variables the engine reads or sets (--on-complete's command,
# and what its hook is given: a run started from a hook sees them).
_OTHER_VARIABLES = frozenset(
    {CONFIG_ENV, f"{ENV_PREFIX}ON_COMPLETE", f"{ENV_PREFIX}REPORT", f"{ENV_PREFIX}EXIT_CODE"}
)


def ignored_variables(environ: Mapping[str, str]) -> list[str]:
    """Return a warning for each ``REPLICATE_BATCH_*`` variable no setting reads.

    Only the run settings come from the environment; a flag-only one set there
    (``REPLICATE_BATCH_OUTPUT_DIR``) or a misspelt name would otherwise be ignored in silence.
    """
    known = {s.envvar for s in RUN_SETTINGS} | _OTHER_VARIABLES
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            flag = "--" + name[len(ENV_PREFIX) :].lower().replace("_", "-")
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
            why = (
                f"no setting has that name; did you mean {close[0]}?"
                if close
                else f"{flag} is set by its flag only, never by the environment"
            )
            warnings.append(f"warning: environment variable {name} is ignored: {why}")
    return warnings


class Option(click.Option):
    """A click option whose ``show_default`` text is shown as is: ``[default: 32]``."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """Return `click.option` with the `Option` class."""
    return click.option(*decls, cls=Option, **attrs)


def _source(ctx: click.Context, param: click.Parameter | None) -> str:
    """Say where a parameter's value came from, for an error message."""
    if param is None or param.name is None:
        return "the command line"
    source = ctx.get_parameter_source(param.name)
    if source is ParameterSource.ENVIRONMENT:
        setting = _BY_PARAM.get(param.name)
        return f"environment variable {setting.envvar if setting else param.envvar}"
    if source is ParameterSource.DEFAULT_MAP:
        return f"settings file {ctx.meta.get(_FILE_KEY, '?')}, {param.name.replace('_', '-')}"
    return f"--{param.name.replace('_', '-')}"


def _fail(ctx: click.Context | None, message: str) -> NoReturn:
    raise click.UsageError(message, ctx)


class _Number(click.ParamType):  # type: ignore[type-arg]
    """An int or float with a lower bound; errors name where the value came from."""

    def __init__(
        self,
        kind: type[int] | type[float],
        minimum: float,
        *,
        inclusive: bool,
        maximum: float | None = None,
    ) -> None:
        self.kind, self.minimum, self.inclusive = kind, minimum, inclusive
        self.maximum = maximum
        self.name = kind.__name__

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        where = _source(ctx, param) if ctx is not None else "value"
        try:
            number = self.kind(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            kind = "an integer" if self.kind is int else "a number"
            _fail(ctx, f"{where}: {value!r} is not {kind}")
        if isinstance(number, float) and not math.isfinite(number):
            _fail(ctx, f"{where}: {value!r} is not a finite number")
        if number < self.minimum or (number == self.minimum and not self.inclusive):
            bound = "at least" if self.inclusive else "more than"
            _fail(ctx, f"{where}: must be {bound} {self.minimum:g}, got {value!r}")
        if self.maximum is not None and number > self.maximum:
            _fail(ctx, f"{where}: must be at most {self.maximum:g}, got {value!r}")
        return number


def bounded(kind: type[int] | type[float], minimum: float, *, inclusive: bool = True) -> Any:
    """Return a click type for a number with a lower bound, said in words.

    For options outside the settings table (``--lease``, ``--workers``, ``--max-spend``):
    their errors read as the settings' ("--lease: must be more than 0, got '0'") and
    their help shows no click range notation ("x>0").
    """
    return _Number(kind, minimum, inclusive=inclusive)


class _Switch(click.types.BoolParamType):
    """A boolean that names its source when the environment or the file gets it wrong."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            where = _source(ctx, param) if ctx is not None else "value"
            _fail(ctx, f"{where}: {value!r} is not a boolean (use true/false, 1/0, yes/no)")


class _Word(click.Choice):  # type: ignore[type-arg]
    """One of a few words; errors name where the value came from, as the numbers' do."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            where = _source(ctx, param) if ctx is not None else "value"
            words = " or ".join(repr(c) for c in self.choices)
            _fail(ctx, f"{where}: {value!r} is not {words}")


def setting_options(*flags: str) -> Callable[[F], F]:
    """Return a decorator adding the named run settings as click options."""
    chosen = [s for s in RUN_SETTINGS if s.flag in flags] if flags else list(RUN_SETTINGS)

    def decorate(func: F) -> F:
        for s in reversed(chosen):
            common: dict[str, Any] = {
                "envvar": s.envvar,
                "show_envvar": True,
                "show_default": s.shown_default(),
                "help": s.help,
                "default": None,
            }
            if s.kind is bool:
                add = option(f"--{s.flag}", is_flag=True, type=_Switch(), **common)
            elif s.kind is str:
                add = option(f"--{s.flag}", type=_Word(s.choices), **common)
            else:
                assert s.kind is int or s.kind is float  # the table's other kinds
                number = _Number(s.kind, s.minimum, inclusive=s.inclusive, maximum=s.maximum)
                add = option(f"--{s.flag}", type=number, metavar=s.metavar, **common)
            func = add(func)
        return func

    return decorate


def given_settings(ctx: click.Context) -> dict[str, Any]:
    """Return `EngineConfig` keyword arguments for the settings the user gave, from any source.

    Settings left at their default are not passed: `EngineConfig` keeps its own.
    """
    return _given(ctx, api=False)


def api_settings(ctx: click.Context) -> dict[str, Any]:
    """Return `ApiConfig` keyword arguments for the settings the user gave (--attempt-timeout)."""
    return _given(ctx, api=True)


def _given(ctx: click.Context, *, api: bool) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for s in RUN_SETTINGS:
        if s.api is not api or s.param not in ctx.params:
            continue
        if ctx.get_parameter_source(s.param) in (None, ParameterSource.DEFAULT):
            continue
        given[s.field] = ctx.params[s.param]
    return given


def _load_settings_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Any:
    if value is None:
        return None
    where = f"settings file {value}" + (
        f" (from {CONFIG_ENV})"
        if ctx.get_parameter_source(param.name or "") is ParameterSource.ENVIRONMENT
        else ""
    )
    try:
        data = yaml.safe_load(value.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(ctx, f"cannot read {where}: {exc.strerror}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        _fail(ctx, f"{where}{at} is not valid YAML")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        _fail(ctx, f"{where} must be a mapping of setting: value")
    settings: dict[str, Any] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_")
        if name not in _BY_PARAM:
            known = ", ".join(s.flag for s in RUN_SETTINGS)
            _fail(ctx, f"{where}: unknown setting {key!r} (known: {known})")
        settings[name] = raw
    ctx.meta[_FILE_KEY] = str(value)
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


def settings_file(ctx: click.Context) -> Path | None:
    """Return the settings file this command read (``--config`` or its variable), if any."""
    name = ctx.meta.get(_FILE_KEY)
    return Path(name) if name else None


def config_option() -> Callable[[F], F]:
    """Return the ``--config PATH`` option: a YAML file of run settings, read first."""
    return option(
        "--config",
        "settings_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_load_settings_file,
        help="YAML file of run settings, keyed by flag name (concurrency: 8). "
        "Precedence: flag > REPLICATE_BATCH_<FLAG> > this file > default.",
    )
