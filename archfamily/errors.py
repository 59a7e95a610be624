"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a one-line message and exit code 2; anything else is a bug
and keeps its traceback. The library says what is wrong in its own terms (a parameter,
a file and its field), never in a command line's: a `SettingError` names its settings,
and the CLI writes each as the flag it came from.
"""
from __future__ import annotations

import functools
import string
from typing import Any, Mapping


class UserError(Exception):
    """Bad input from the user: a clear one-line message, never a traceback."""


class SettingError(UserError):
    """A setting the library was given that it cannot use: out of range, or at odds with another.

    The message names settings in braces and takes values as keywords:
    `SettingError("{epochs} must be above 0, got {got:g}", got=-1)`. `str()` writes each setting as its parameter
    name ("epochs must be above 0, got -1"); a front end writes it as its own name for it (`named`: the CLI's
    "--epochs must be above 0, got -1").
    """

    def __init__(self, template: str, **values: Any) -> None:
        self.template, self.values = template, values
        fields = (name for _, name, _, _ in string.Formatter().parse(template) if name)
        self.settings = tuple(dict.fromkeys(name for name in fields if name not in values))
        super().__init__(self.named({}))

    def named(self, names: Mapping[str, str]) -> str:
        """The message with each setting written as `names` calls it (as itself where `names` does not)."""
        return self.template.format(**{s: names.get(s, s) for s in self.settings}, **self.values)

    def __reduce__(self) -> Any:  # pickled (a process pool, submitit) and back: the same template and values
        return functools.partial(type(self), self.template, **self.values), ()
