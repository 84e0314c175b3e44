"""Processes on this host: whether the one a lock, a temporary file or a run names lives."""


def process_alive(pid: object) -> bool:
    """Whether ``pid`` (an int; anything else names no process) is a live process here."""
    import psutil  # a dagster dependency; light

    return isinstance(pid, int) and pid > 0 and psutil.pid_exists(pid)
