"""Where the platform keeps its files, and which environment profile is active.

Read at call time, never at import time, so tests and commands can point the
platform at another folder through the environment.
"""

import os
from datetime import UTC, datetime
from pathlib import Path

from mlplatform.errors import UsageError

ENV_VAR = "MLPLATFORM_ENV"
HOME_VAR = "MLPLATFORM_HOME"
DATA_VAR = "MLPLATFORM_DATA_DIR"
CLOCK_VAR = "MLPLATFORM_NOW"
PROFILES = ("local", "production")  # production: deploy/, docs/deploy.md


def environment() -> str:
    """The active profile (``MLPLATFORM_ENV``), ``local`` unless set."""
    profile = os.environ.get(ENV_VAR, "local")
    if profile not in PROFILES:
        raise UsageError(f"{ENV_VAR}={profile!r} is not a known profile (known: {PROFILES})")
    return profile


def now() -> datetime:
    """The platform's clock, in UTC: ``MLPLATFORM_NOW`` (ISO time, UTC if naive) when set.

    Retraining rails, the deployment log and the prediction log read it, so a replay of
    2013 can run them on simulated time; wall clock everywhere else.
    """
    if text := os.environ.get(CLOCK_VAR):
        stamp = datetime.fromisoformat(text)
        return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return datetime.now(UTC)


def project_root() -> Path:
    """The checkout the platform runs from: ``MLPLATFORM_HOME``, else this repository."""
    if home := os.environ.get(HOME_VAR):
        return Path(home).resolve()
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").exists() else Path.cwd()


def data_dir() -> Path:
    """Root of the landing zone, quarantine, warehouse and reports (``MLPLATFORM_DATA_DIR``)."""
    if data := os.environ.get(DATA_VAR):
        return Path(data).resolve()
    return project_root() / "data"


def ensure_dagster_home() -> Path:
    """The Dagster instance folder: ``DAGSTER_HOME``, else ``.dagster_home`` in the checkout.

    The folder's ``dagster.yaml`` is a link to the repository's, so there is one instance
    configuration for ``make dev``, ``make demo`` and the ``mlplatform`` command.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or project_root() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    repo_config = project_root() / "dagster.yaml"
    if not config.exists() and repo_config.exists():
        config.symlink_to(repo_config)
    return home
