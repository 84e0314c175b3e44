"""Celery settings of the workers (``celery -A dagster_celery.app worker``).

dagster-celery's app imports a ``dagster_celery_config`` module when one is on the path;
``PYTHONPATH=deploy/celery`` puts this one there. Broker and result backend are the
ones the production profile's executor uses (``mlplatform.resources``).
"""

import os

broker_url = os.environ.get("MLPLATFORM_CELERY_BROKER") or "redis://127.0.0.1:6379/2"
result_backend = os.environ.get("MLPLATFORM_CELERY_BACKEND") or "redis://127.0.0.1:6379/3"
worker_prefetch_multiplier = 1  # a step is long; never hold one back behind another
