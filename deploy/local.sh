#!/usr/bin/env bash
# The production profile on one machine: PostgreSQL and Redis already running on 127.0.0.1
# (`.ci/run` starts them); this starts an MLflow server, a Dask scheduler with two workers
# and a Celery worker, runs the demo's pipeline through them, and stops them again.
#   deploy/local.sh [--problem NAME ...] [--start YYYY-MM-DD --end YYYY-MM-DD]
# (default: every problem found, each over the first 28 days of its spec's partitioning)
# State stays in PostgreSQL (databases mlplatform_dagster, mlplatform_mlflow,
# mlplatform_feast, mlplatform_optuna), the MLflow server's artifacts (.mlflow_production/
# or $MLPLATFORM_PRODUCTION_ARTIFACTS, which no client reads: it proxies them), Redis dbs 1-3, .dagster_production/ and data_production/ (or
# $MLPLATFORM_PRODUCTION_HOME and $MLPLATFORM_PRODUCTION_DATA): never the local profile's.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PG=postgresql+psycopg2://postgres@127.0.0.1:5432
export MLPLATFORM_ENV=production
# never the local instance ($DAGSTER_HOME, which the Makefile points at .dagster_home)
export DAGSTER_HOME=${MLPLATFORM_PRODUCTION_HOME:-$PWD/.dagster_production}
export MLPLATFORM_DATA_DIR=${MLPLATFORM_PRODUCTION_DATA:-$PWD/data_production}
export MLPLATFORM_DAGSTER_PG_URL=${MLPLATFORM_DAGSTER_PG_URL:-$PG/mlplatform_dagster}
export MLPLATFORM_MLFLOW_URI=${MLPLATFORM_MLFLOW_URI:-http://127.0.0.1:5000}
# the profile's resources read these at launch (dg.EnvVar): this machine's servers unless set
export MLPLATFORM_FEAST_REGISTRY=${MLPLATFORM_FEAST_REGISTRY:-postgresql+psycopg://postgres@127.0.0.1:5432/mlplatform_feast}
export MLPLATFORM_FEAST_REDIS=${MLPLATFORM_FEAST_REDIS:-127.0.0.1:6379,db=1}
export MLPLATFORM_CELERY_BROKER=${MLPLATFORM_CELERY_BROKER:-redis://127.0.0.1:6379/2}
export MLPLATFORM_CELERY_BACKEND=${MLPLATFORM_CELERY_BACKEND:-redis://127.0.0.1:6379/3}
export MLPLATFORM_DASK_SCHEDULER=${MLPLATFORM_DASK_SCHEDULER:-tcp://127.0.0.1:8786}
export MLPLATFORM_EVIDENTLY_WORKSPACE=${MLPLATFORM_EVIDENTLY_WORKSPACE:-}  # empty: the data folder's
export MLPLATFORM_OPTUNA_STORAGE=${MLPLATFORM_OPTUNA_STORAGE:-$PG/mlplatform_optuna}
export MLPLATFORM_OPTUNA_WORKERS=${MLPLATFORM_OPTUNA_WORKERS:-2}  # trial processes per search
MLFLOW_ARTIFACTS=${MLPLATFORM_PRODUCTION_ARTIFACTS:-$PWD/.mlflow_production}
MLFLOW_PORT=${MLPLATFORM_MLFLOW_URI##*:}
LOGS=$DAGSTER_HOME/logs
mkdir -p "$DAGSTER_HOME" "$LOGS" "$MLPLATFORM_DATA_DIR"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || cp deploy/dagster.yaml "$DAGSTER_HOME/"
for db in mlplatform_dagster mlplatform_mlflow mlplatform_feast mlplatform_optuna; do
  psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='$db'" | grep -q 1 ||
    psql -h 127.0.0.1 -U postgres -qc "create database $db"
done

PIDS=()
stop() {  # each server runs in its own session: stop the group, children included
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 5
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap stop EXIT

# the server stores artifacts and proxies them (mlflow-artifacts: URIs): clients need
# only its URL, no folder shared with it
setsid $BIN/mlflow server --backend-store-uri "$PG/mlplatform_mlflow" \
  --artifacts-destination "$MLFLOW_ARTIFACTS" --serve-artifacts \
  --host 127.0.0.1 --port "$MLFLOW_PORT" >"$LOGS/mlflow.log" 2>&1 &
PIDS+=($!)
# Dask on 127.0.0.1 only (its comms carry pickles): deploy/dask.sh gives every process a host
setsid deploy/dask.sh scheduler >"$LOGS/dask-scheduler.log" 2>&1 &
PIDS+=($!)
setsid deploy/dask.sh worker 2 >"$LOGS/dask-worker.log" 2>&1 &
PIDS+=($!)
PYTHONPATH=deploy/celery setsid $BIN/celery -A dagster_celery.app worker -Q dagster \
  --concurrency 2 --prefetch-multiplier 1 --loglevel WARNING >"$LOGS/celery.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
  curl -sf "$MLPLATFORM_MLFLOW_URI/health" >/dev/null && break
  sleep 1
done
$BIN/python -m mlplatform.production demo "$@"
