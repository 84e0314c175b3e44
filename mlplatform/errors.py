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


class ContractError(UsageError):
    """A problem plug-in breaks a contract of the platform (``mlplatform.lib.contract``).

    The message names the problem, the file to change and the fix, one line per broken
    contract.
    """

    def __init__(self, problem: str, violations: "list[tuple[str, str]]") -> None:
        self.problem = problem
        self.violations = violations  # (file, what is wrong and the fix)
        lines = "\n".join(f"  - {file}: {message}" for file, message in violations)
        super().__init__(f"problem {problem!r} breaks the plug-in contract:\n{lines}")

    def __reduce__(self) -> "tuple[type, tuple[str, list[tuple[str, str]]]]":
        return (type(self), (self.problem, self.violations))


class BrokenProblemError(UsageError):
    """A problem folder that cannot load (its spec, a module, or a contract); others still do."""
