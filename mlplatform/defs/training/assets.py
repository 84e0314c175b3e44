"""The training set: labelled rows of a rolling window, joined point-in-time through Feast.

Its checks are blocking gates for everything trained on it: the point-in-time audit,
the leakage guard, and offline/online parity of the feature store.
"""

from datetime import date, timedelta

import dagster as dg

from mlplatform.defs.features.assets import online_key, registry_key
from mlplatform.lib.names import NO_LEAKAGE, ONLINE_PARITY, POINT_IN_TIME
from mlplatform.problems import Problem
from mlplatform.resources import FeastResource, LakeResource

GROUP = "training"
PARITY_SAMPLE = 20


def training_set_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's training set asset."""
    return dg.AssetKey([problem.name, "training_set"])


class TrainingSetConfig(dg.Config):
    """Which window to build; the defaults take the spec's window up to the newest day."""

    end_day: str = ""
    window_days: int = 0


_CHECKS = {
    POINT_IN_TIME: "No feature value from after the prediction time or older than its TTL; "
    "every value the newest such; no duplicate rows.",
    NO_LEAKAGE: "No outcome column (known only after prediction time) in the training set.",
    ONLINE_PARITY: "For sampled entities the online store holds the newest offline values.",
}


def build_training_set_asset(problem: Problem) -> dg.AssetsDefinition:
    """The training set of ``problem`` with its blocking audits."""
    key = training_set_key(problem)
    spec = problem.spec
    tables = problem.feature_tables()

    @dg.asset(
        key=key,
        deps=[
            registry_key(problem),
            online_key(problem),
            dg.AssetDep(dg.AssetKey([problem.name, spec.target.source])),
            *(dg.AssetKey([problem.name, t.name]) for t in tables),
        ],
        group_name=GROUP,
        description=f"Labelled {spec.target.source} of the last {spec.training_window_days} "
        "days with their features, joined point-in-time through Feast.",
        kinds={"feast", "parquet"},
        owners=[spec.owner],
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=text)
            for name, text in _CHECKS.items()
        ],
        tags={"mlplatform/problem": problem.name},
    )
    def _training_set(
        context: dg.AssetExecutionContext,
        config: TrainingSetConfig,
        lake: LakeResource,
        feast: FeastResource,
    ) -> dg.MaterializeResult:
        from mlplatform.defs.features.assets import complete_days
        from mlplatform.defs.metadata import check_result
        from mlplatform.lib import training_set as ts
        from mlplatform.lib.feature_store import (
            NotMaterializedError,
            feature_vectors,
            parity_sample,
        )
        from mlplatform.lib.features import label, window
        from mlplatform.lib.landing import days as day_range
        from mlplatform.lib.names import features_table

        store = lake.lake()
        ready = [
            d
            for d in complete_days(lake, problem)
            if store.table_path(problem.name, spec.target.source, d).exists()
            and (not config.end_day or d <= date.fromisoformat(config.end_day))
        ]
        if not ready:
            raise dg.Failure(
                f"{problem.name}: no day has both {spec.target.source} and every feature table"
            )
        end = ready[-1]
        start = max(
            spec.partitioning.start,
            end - timedelta(days=(config.window_days or spec.training_window_days) - 1),
        )
        days = list(day_range(start, end))
        requests = ts.labelled(store.read_days(problem.name, spec.target.source, days), spec)
        if requests.empty:
            raise dg.Failure(f"{problem.name}: no labelled {spec.target.source} in {start}..{end}")
        fs = feast.store(problem)
        service = feast.service(problem, fs)
        vectors = feature_vectors(problem, fs, service, requests, online=False)
        training = ts.assemble(requests, vectors, spec)
        version = ts.data_version(training)
        path = store.write_table(problem.name, "training_set", version, training)
        store.write_latest(
            problem.name,
            "training_set",
            {
                "data_version": version,
                "rows": len(training),
                "path": str(path),
                "start": start.isoformat(),
                "end": end.isoformat(),
            },
        )

        # the audit recomputes every pick from the offline rows the join could have seen
        reach = max(t.ttl for t in tables).days + 1
        offline = {
            t.name: store.read_days(problem.name, features_table(t), window(end, len(days) + reach))
            for t in tables
        }
        try:
            online, newest = parity_sample(fs, store, problem, PARITY_SAMPLE)
        except NotMaterializedError as exc:
            raise dg.Failure(str(exc)) from None
        outcomes = [
            ts.point_in_time_audit(training, tables, offline, ts.row_keys(spec)),
            ts.leakage_audit(training, spec),
            ts.parity_audit(online, newest, tables),
        ]
        features = [f.name for f in spec.features]
        context.log.info(f"training set {version}: {len(training)} rows, {start}..{end}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(training),
                "data_version": version,
                "path": dg.MetadataValue.path(str(path)),
                "window": f"{start}..{end}",
                "label_prevalence": float(label(requests, spec.target).mean()),
                "feature_null_rates": dg.MetadataValue.json(
                    {f: round(float(training[f].isna().mean()), 4) for f in features}
                ),
            },
            check_results=[check_result(o, key) for o in outcomes],
            data_version=dg.DataVersion(version),
        )

    return _training_set
