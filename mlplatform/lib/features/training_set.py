"""Training sets: labelled rows joined point-in-time, and the checks that audit them."""

import hashlib
from datetime import date, datetime, timedelta

import pandas as pd

from mlplatform.lib.checks import CheckOutcome
from mlplatform.lib.features.build import label
from mlplatform.lib.features.tables import EVENT_TS, FeatureTable
from mlplatform.lib.names import NO_LEAKAGE, ONLINE_PARITY, POINT_IN_TIME
from mlplatform.spec import ProblemSpec


def row_keys(spec: ProblemSpec) -> list[str]:
    """Columns identifying a training row: the target source's natural key, time as event time."""
    source = spec.sources[spec.target.source]
    return [EVENT_TS if k == source.event_timestamp else k for k in source.natural_key]


def split_days(
    ready: list[date], spec: ProblemSpec, window_days: int = 0, holdout_days: int = 0
) -> tuple[list[date], list[date]]:
    """Training days and the holdout days after them, from the days ready to use.

    The newest ``holdout_days`` ready days are held out for evaluation; the training
    window is the ``window_days`` calendar days before them. Zero takes the spec's value.
    """
    holdout_n = holdout_days or spec.gates.holdout_days
    window = window_days or spec.training_window_days
    if len(ready) <= holdout_n:
        span = f"{ready[0]}..{ready[-1]}" if ready else "none"
        raise ValueError(
            f"{len(ready)} ready day(s) ({span}) leave nothing to train on after holding "
            f"out {holdout_n} for evaluation"
        )
    holdout = ready[-holdout_n:]
    end = ready[-holdout_n - 1]
    start = max(spec.partitioning.start, end - timedelta(days=window - 1))
    return [d for d in ready[:-holdout_n] if d >= start], holdout


def labelled(frame: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """Rows whose outcome is known."""
    return frame[label(frame, spec.target).notna()].reset_index(drop=True)


def assemble(requests: pd.DataFrame, vectors: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """Key columns, entity rows with features, and the label, one row per request."""
    source = spec.sources[spec.target.source]
    keys = [k for k in source.natural_key if k != source.event_timestamp]
    extra = requests[[k for k in keys if k not in vectors.columns]]
    out = pd.concat([extra, vectors], axis=1)
    # 0/1 as int64 for a binary target; a regression target keeps its values (float64)
    values = label(requests, spec.target)
    out[spec.target.name] = values if spec.is_regression else values.astype("int64")
    return out.reset_index(drop=True)


def data_version(frame: pd.DataFrame) -> str:
    """Content hash of a table (values and column names), stable across runs."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def asof_reference(rows: pd.DataFrame, table: FeatureTable, offline: pd.DataFrame) -> pd.Series:
    """Event time (epoch s) of the row a correct point-in-time join picks, by ``merge_asof``.

    The newest row of the same entity with event time at or before the prediction time
    and no older than the table's TTL; NaN where there is none.
    """
    keys = list(table.join_keys)
    left = pd.DataFrame(
        {
            "_row": range(len(rows)),
            **{k: rows[k].astype(str).reset_index(drop=True) for k in keys},
            EVENT_TS: pd.to_datetime(rows[EVENT_TS], utc=True)
            .dt.as_unit("us")
            .reset_index(drop=True),
        }
    ).sort_values(EVENT_TS)
    right = offline[[*keys, EVENT_TS, table.ts_column]].copy()
    right[keys] = right[keys].astype(str)
    right[EVENT_TS] = pd.to_datetime(right[EVENT_TS], utc=True).dt.as_unit("us")
    right = right.sort_values(EVENT_TS)
    joined = pd.merge_asof(
        left,
        right,
        on=EVENT_TS,
        by=keys,
        direction="backward",
        tolerance=pd.Timedelta(table.ttl),
        allow_exact_matches=True,
    )
    return joined.sort_values("_row")[table.ts_column].reset_index(drop=True)


def point_in_time_audit(
    training: pd.DataFrame,
    tables: list[FeatureTable],
    offline: dict[str, pd.DataFrame],
    keys: list[str],
    max_cases: int = 10,
) -> CheckOutcome:
    """No value from after the prediction time, none older than its TTL, every pick the newest.

    ``offline`` holds each table's offline rows; an independent ``merge_asof`` join must
    pick the same event time as Feast did for every row and table. Rows must be unique
    on ``keys``.
    """
    when = (
        pd.to_datetime(training[EVENT_TS], utc=True) - pd.Timestamp(0, tz="UTC")
    ) // pd.Timedelta(seconds=1)
    details: dict[str, object] = {}
    problems = []
    for table in tables:
        picked = pd.to_numeric(training[table.ts_column], errors="coerce")
        future = int((picked > when).sum())
        stale = int((picked < when - table.ttl // timedelta(seconds=1)).sum())
        expected = asof_reference(training, table, offline[table.name])
        differ = ~(
            (picked.to_numpy() == expected.to_numpy())
            | (picked.isna().to_numpy() & expected.isna().to_numpy())
        )
        details[table.name] = {
            "after_prediction_time": future,
            "older_than_ttl": stale,
            "not_newest": int(differ.sum()),
            "missing": int(picked.isna().sum()),
        }
        if future or stale or differ.any():
            problems.append(
                f"{table.name}: {future} from the future, {stale} past TTL, "
                f"{int(differ.sum())} not the newest"
            )
    duplicates = int(training.duplicated(keys).sum())
    details["duplicate_keys"] = duplicates
    if duplicates:
        problems.append(f"{duplicates} duplicate {tuple(keys)} rows")
        details["duplicate_examples"] = (
            training.loc[training.duplicated(keys), keys]
            .head(max_cases)
            .astype(str)
            .to_dict("records")
        )
    if problems:
        return CheckOutcome(POINT_IN_TIME, False, "ERROR", "; ".join(problems), details)
    return CheckOutcome(
        POINT_IN_TIME,
        True,
        "ERROR",
        f"{len(training)} rows x {len(tables)} views: every value known before prediction "
        "time, within TTL, and the newest such",
        details,
    )


def leakage_audit(training: pd.DataFrame, spec: ProblemSpec) -> CheckOutcome:
    """No outcome column (known only after prediction time) among the training set's columns."""
    outcomes = {*spec.target.outcomes, spec.target.column}
    leaked = sorted(outcomes & set(training.columns))
    features = {f.name for f in spec.features}
    if leaked:
        return CheckOutcome(
            NO_LEAKAGE,
            False,
            "ERROR",
            f"outcome column(s) {leaked} in the training set "
            f"({'used as features' if features & set(leaked) else 'present'})",
            {"leaked": leaked},
        )
    return CheckOutcome(
        NO_LEAKAGE,
        True,
        "ERROR",
        f"none of {sorted(outcomes)} in the training set",
        {"outcomes": sorted(outcomes)},
    )


def newest_offline(offline: pd.DataFrame, table: FeatureTable, end: datetime) -> pd.DataFrame:
    """Each entity's newest offline row at or before ``end`` (what the online store holds).

    Indexed by the table's join key (a ``MultiIndex`` for a composite key).
    """
    stamps = pd.to_datetime(offline[EVENT_TS], utc=True)
    recent = offline[stamps <= end]
    keys = list(table.join_keys)
    return recent.sort_values(EVENT_TS).groupby(keys).tail(1).set_index(keys)


def entity_key(row: "pd.Series | dict", table: FeatureTable) -> object:
    """A row's key in ``newest_offline``'s index: the value, or a tuple for a composite key."""
    values = tuple(row[k] for k in table.join_keys)
    return values[0] if len(values) == 1 else values


def parity_audit(
    online: dict[str, pd.DataFrame],
    newest: dict[str, pd.DataFrame],
    tables: list[FeatureTable],
    max_cases: int = 10,
) -> CheckOutcome:
    """Online values equal the newest offline rows, entity by entity, feature by feature.

    ``online`` holds, per table, the online store's values of sampled entities (join key
    and feature columns); ``newest`` holds each table's newest offline rows by join key.
    """
    mismatches = []
    compared = 0
    for table in tables:
        expected = newest[table.name]
        columns = [c for c in expected.columns if c != EVENT_TS]
        for _, row in online[table.name].iterrows():
            key = entity_key(row, table)
            for column in columns:
                compared += 1
                want, got = expected.at[key, column], row[column]
                if pd.isna(want) or pd.isna(got):
                    same = bool(pd.isna(want) and pd.isna(got))
                elif isinstance(want, str) or isinstance(got, str):
                    same = str(want) == str(got)
                else:
                    same = abs(float(want) - float(got)) <= 1e-9  # pyright: ignore[reportArgumentType]
                if not same:
                    mismatches.append(
                        {
                            "table": table.name,
                            "key": key,
                            "column": column,
                            "offline": str(want),
                            "online": str(got),
                        }
                    )
    details = {
        "compared_values": compared,
        "mismatches": len(mismatches),
        "examples": mismatches[:max_cases],
    }
    if not compared:
        return CheckOutcome(ONLINE_PARITY, False, "ERROR", "no online value to compare", details)
    if mismatches:
        return CheckOutcome(
            ONLINE_PARITY,
            False,
            "ERROR",
            f"{len(mismatches)} of {compared} online values differ from offline",
            details,
        )
    return CheckOutcome(
        ONLINE_PARITY,
        True,
        "ERROR",
        f"{compared} online values equal the newest offline rows",
        details,
    )
