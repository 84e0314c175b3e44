"""The platform's own errors: things a user can fix, reported as one line, never a traceback.

Every error the platform raises on purpose (a bad spec, an unknown problem, a day outside
the data, a missing model file, a training already running...) derives from
``PlatformError``. The ``mlplatform`` command prints such an error as one line on stderr
and exits non-zero; anything else is a bug and keeps its traceback.
"""


class PlatformError(Exception):
    """An error of the platform's own, whose message says what is wrong and what to do.

    ``exit_code`` is what the ``mlplatform`` command exits with: 2 for a usage error
    (arguments, spec), 1 for a state of the platform that refuses the command.
    """

    exit_code = 1

    def __str__(self) -> str:
        # KeyError subclasses would otherwise print their message in quotes
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(PlatformError, ValueError):
    """The command's arguments cannot be used (a bad spec, days outside the data...)."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """A name (a problem, a source) that is not defined; the message lists the known ones."""


class BusyError(PlatformError):
    """Another process holds what this one needs exclusively (a training, a study)."""
