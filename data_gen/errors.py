"""The one base class of users' errors, the one exit-code table, and the one CLI runner.

Every error a user can cause (a bad flag value, a malformed file, a refused request) is a
:class:`UserError`: CLIs print it as one line ``error: ...`` and exit with ``EXIT_USER_ERROR``;
anything else is a bug and keeps its traceback. data_gen owns this module because it must not
import rolellm_jax; rolellm_jax.errors re-exports it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_USER_ERROR = 1  # bad input, a failed request, a refused action: the message says which
EXIT_USAGE = 2  # a malformed command line (argparse's own code)
EXIT_DOES_NOT_FIT = 3  # aot: the step does not fit the chips' memory


class UserError(Exception):
    """An error in what the user gave or asked for; its message names the file, flag or field."""


class ConfigError(UserError, ValueError):
    """A configuration value (flag, preset key, config.json field) that cannot be used."""


def print_error(err: BaseException) -> None:
    print(f"error: {err}", file=sys.stderr)


def run_cli(body: Callable[[], int], *, extra: tuple[type[BaseException], ...] = ()) -> int:
    """``body()``'s exit code; a :class:`UserError` (or one of ``extra``) becomes one line and exit 1."""
    try:
        return body()
    except (UserError, *extra) as err:
        print_error(err)
        return EXIT_USER_ERROR
