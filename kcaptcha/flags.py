"""The only library module that touches `absl.flags`: one flag per `Config` field."""

import dataclasses
import typing
from typing import Optional, Sequence

from absl import flags

from kcaptcha.config import Config


def _is_tuple_field(field) -> bool:
    return typing.get_origin(field.type) in (tuple, typing.Tuple) or isinstance(field.default, tuple)


UNLISTED_MODULE = "kcaptcha.flags.unused_here"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, defaults: Config = Config(),
                 fields: Optional[Sequence[str]] = None, listed: bool = True) -> None:
    """Defines `--<field>` for every `Config` field (or those in `fields`) on `flag_values` (idempotent).

    `listed=False` keeps them out of a command's `--help` (still in `--helpfull`): a command that uses a few
    fields still takes a flagfile written for `bin/train`.
    """
    extra = {} if listed else {"module_name": UNLISTED_MODULE}
    for field in dataclasses.fields(Config):
        if field.name in flag_values or (fields is not None and field.name not in fields):
            continue
        default = getattr(defaults, field.name)
        help_text = field.metadata.get("help", field.name)
        if _is_tuple_field(field):
            flags.DEFINE_list(field.name, [str(v) for v in default], help_text, flag_values=flag_values, **extra)
        elif isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values, **extra)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values, **extra)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values, **extra)
        else:
            flags.DEFINE_string(field.name, default, help_text, flag_values=flag_values, **extra)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
    """Builds a validated `Config` from parsed flags (a field without a flag keeps its default); raises
    `ValueError` on a bad value."""
    values = {}
    for field in dataclasses.fields(Config):
        if field.name not in flag_values:
            continue
        value = flag_values[field.name].value
        if _is_tuple_field(field):
            items = [v.strip() for v in (value or []) if v.strip()]
            if isinstance(field.default, tuple) and field.default and isinstance(field.default[0], int):
                try:
                    items = [int(v) for v in items]
                except ValueError:
                    raise ValueError(f"--{field.name} takes comma-separated integers. Received: {value}") from None
            value = tuple(items)
        values[field.name] = value
    return Config(**values).validate()


def parse_flagfile(path: str, extra_args=()) -> Config:
    """Parses a flagfile into a fresh `FlagValues` and returns its validated `Config`."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["kcaptcha", f"--flagfile={path}", *extra_args])
    return config_from_flags(flag_values)
