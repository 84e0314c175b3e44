#!/usr/bin/env bash
# The production profile's Dask cluster on one machine, listening on 127.0.0.1 only.
# Dask's comms carry pickles: whoever reaches a scheduler, nanny or worker port runs code
# in it. `dask worker` binds every interface unless --host is given, and dashboards do
# unless --dashboard-address names a host, so both are given here, for every process.
#   deploy/dask.sh scheduler     # on the port of $MLPLATFORM_DASK_SCHEDULER (default 8786)
#   deploy/dask.sh worker [N]    # N worker processes (default 2), one thread each
# A cluster across machines needs a private network or TLS (`dask scheduler --tls-*`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MLPLATFORM_BIN:-.venv/bin}
SCHEDULER=${MLPLATFORM_DASK_SCHEDULER:-tcp://127.0.0.1:8786}
HOST=127.0.0.1
case "${1:-}" in
  scheduler)
    exec "$BIN/dask" scheduler --host "$HOST" --port "${SCHEDULER##*:}" \
      --dashboard-address "$HOST:0"
    ;;
  worker)
    exec "$BIN/dask" worker "$SCHEDULER" --host "$HOST" --nworkers "${2:-2}" --nthreads 1 \
      --dashboard-address "$HOST:0"
    ;;
  *)
    echo "usage: $0 scheduler | worker [N]" >&2
    exit 2
    ;;
esac
