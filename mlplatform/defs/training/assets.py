"""The training and holdout sets: labelled rows joined point-in-time through Feast.

One step builds both from the same ready days, so the holdout always lies after the
training window. Their checks are blocking gates for everything built on them: the
point-in-time audit, the leakage guard, and offline/online parity of the feature store.
"""

from datetime import date

import dagster as dg

from mlplatform.defs.features.assets import online_key, registry_key
from mlplatform.lib.names import NO_LEAKAGE, ONLINE_PARITY, POINT_IN_TIME
from mlplatform.problems import Problem
from mlplatform.resources import FeastResource, LakeResource

GROUP = "training"
PARITY_SAMPLE = 20
CHECKS_METADATA = "checks_passed"  # {check name: passed} of the sets' own blocking checks


def training_set_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's training set asset."""
    return dg.AssetKey([problem.name, "training_set"])


def holdout_set_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's holdout set asset (the days after the training window)."""
    return dg.AssetKey([problem.name, "holdout_set"])


class TrainingSetConfig(dg.Config):
    """Which days to use; zero or empty takes the spec's values and the newest ready day."""

    end_day: str = ""
    window_days: int = 0
    holdout_days: int = 0


_CHECKS = {
    POINT_IN_TIME: "No feature value from after the prediction time or older than its TTL; "
    "every value the newest such; no duplicate rows.",
    NO_LEAKAGE: "No outcome column (known only after prediction time) in the training set.",
    ONLINE_PARITY: "For sampled entities the online store holds the newest offline values.",
}


def build_training_set_asset(problem: Problem) -> dg.AssetsDefinition:
    """The training and holdout sets of ``problem`` with their blocking audits."""
    train_key, holdout_key = training_set_key(problem), holdout_set_key(problem)
    spec = problem.spec
    tables = problem.feature_tables()
    deps = [
        registry_key(problem),
        online_key(problem),
        dg.AssetKey([problem.name, spec.target.source]),
        *(dg.AssetKey([problem.name, t.name]) for t in tables),
    ]
    common = {"deps": deps, "group_name": GROUP, "kinds": {"feast", "parquet"}}
    common |= {"owners": [spec.owner], "tags": {"mlplatform/problem": problem.name}}

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                train_key,
                description=f"Labelled {spec.target.source} of the {spec.training_window_days} "
                "days before the holdout, with their features joined point-in-time through Feast.",
                **common,
            ),
            dg.AssetSpec(
                holdout_key,
                description=f"Labelled {spec.target.source} of the newest "
                f"{spec.gates.holdout_days} days, after the training window: what the "
                "evaluation gates score candidates and the champion on.",
                **common,
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=text)
            for key in (train_key, holdout_key)
            for name, text in _CHECKS.items()
            if key == train_key or name != ONLINE_PARITY
        ],
        name=f"{problem.name}__training_set",
    )
    def _training_set(
        context: dg.AssetExecutionContext,
        config: TrainingSetConfig,
        lake: LakeResource,
        feast: FeastResource,
    ):
        from mlplatform.defs.features.assets import complete_days
        from mlplatform.defs.metadata import check_result
        from mlplatform.lib.features import training_set as ts
        from mlplatform.lib.features.build import label, window
        from mlplatform.lib.features.feature_store import (
            NotMaterializedError,
            feature_vectors,
            parity_sample,
        )
        from mlplatform.lib.names import features_table

        store = lake.lake()
        ready = [
            d
            for d in complete_days(lake, problem)
            if store.has_partition(problem.name, spec.target.source, d)  # not a rejected day
            and (not config.end_day or d <= date.fromisoformat(config.end_day))
        ]
        try:
            train_days, holdout_days = ts.split_days(
                ready, spec, config.window_days, config.holdout_days
            )
        except ValueError as exc:
            raise dg.Failure(f"{problem.name}: {exc}") from None
        # days left out because their newest landing was rejected: say which, and where
        for rejected in (
            r for s in spec.daily_sources() for r in store.rejections(problem.name, s)
        ):
            if rejected.blocks and train_days[0].isoformat() <= rejected.day:
                context.log.warning(f"left out: {rejected.message()}")
        fs = feast.store(problem)
        service = feast.service(problem, fs)
        # the audit recomputes every pick from the offline rows the join could have seen
        reach = max(t.ttl for t in tables).days + 1
        span = (holdout_days[-1] - train_days[0]).days + 1
        offline = {
            t.name: store.read_days(
                problem.name, features_table(t), window(holdout_days[-1], span + reach)
            )
            for t in tables
        }
        try:
            online, newest = parity_sample(fs, store, problem, PARITY_SAMPLE)
        except NotMaterializedError as exc:
            raise dg.Failure(str(exc)) from None
        parity = ts.parity_audit(online, newest, tables)
        features = [f.name for f in spec.features]
        for key, days in ((train_key, train_days), (holdout_key, holdout_days)):
            name = key.path[-1]
            source = store.read_days(problem.name, spec.target.source, days)
            requests = ts.labelled(source, spec)
            if requests.empty:
                raise dg.Failure(f"{problem.name}: no labelled {spec.target.source} for {name}")
            vectors = feature_vectors(problem, fs, service, requests, online=False)
            frame = ts.assemble(requests, vectors, spec)
            if key == holdout_key:  # the request as it arrived, for replaying it
                frame[spec.prediction_time] = requests[spec.prediction_time].to_numpy()
            version = ts.data_version(frame)
            path = store.write_table(problem.name, name, version, frame)
            window_text = f"{days[0]}..{days[-1]}"
            store.write_latest(
                problem.name,
                name,
                {
                    "data_version": version,
                    "rows": len(frame),
                    "path": str(path),
                    "start": days[0].isoformat(),
                    "end": days[-1].isoformat(),
                    # the landings it read: a day ingested again later makes it stale
                    "inputs": store.input_versions(problem.name, spec.daily_sources(), days),
                },
            )
            outcomes = [
                ts.point_in_time_audit(frame, tables, offline, ts.row_keys(spec)),
                ts.leakage_audit(frame, spec),
                *([parity] if key == train_key else []),
            ]
            context.log.info(f"{name} {version}: {len(frame)} rows, {window_text}")
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "dagster/row_count": len(frame),
                    "data_version": version,
                    "path": dg.MetadataValue.path(str(path)),
                    "window": window_text,
                    "days": len(days),
                    # the share of positives; a regression target's mean value
                    ("label_mean" if spec.is_regression else "label_prevalence"): float(
                        label(requests, spec.target).mean()
                    ),
                    "feature_null_rates": dg.MetadataValue.json(
                        {f: round(float(frame[f].isna().mean()), 4) for f in features}
                    ),
                    # the checks below, beside the version they judged: the evaluation of
                    # a model trained on this version reads them here (CHECKS_METADATA)
                    CHECKS_METADATA: dg.MetadataValue.json({o.name: o.passed for o in outcomes}),
                },
                check_results=[check_result(o, key) for o in outcomes],
                data_version=dg.DataVersion(version),
            )

    return _training_set
