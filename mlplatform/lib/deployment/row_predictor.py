"""One encoded row through LightGBM's single-row fast path, for serving and the latency gate.

``LoadedModel.predict_row`` scores through it, so the latency gate times the path that
serves.
"""

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightgbm as lgb


class RowPredictor:
    """``Booster.predict`` of one encoded row (num_threads=1), prepared once per booster.

    ``Booster.predict`` builds a predictor and its parameter string on every call and
    makes several calls into LightGBM, each releasing the GIL: under load each release
    hands the GIL to another thread, and getting it back waits up to the 5 ms switch
    interval (py-spy put a quarter of the request threads' samples on the first of these
    calls, which takes 1 µs). LightGBM's single-row fast path
    (``LGBM_BoosterPredictForMatSingleRowFast``) is one call with its configuration made
    here, through a ``PyDLL`` handle of the same library, which keeps the GIL over ~10 µs.
    Same trees, same iterations (``best_iteration``, as ``predict`` picks), same output
    transformation: the same float as ``Booster.predict`` of that row.

    Raises:
        ValueError: the row's length is not the booster's number of features.
        LightGBMError: LightGBM refused the call (its own message).
    """

    def __init__(self, booster: Any) -> None:
        import ctypes

        import numpy as np
        from lightgbm.libpath import _LIB  # the fast path has no Python wrapper

        self._np, self._ctypes = np, ctypes
        # the library lightgbm loaded (dlopen again: the same handle); PyDLL keeps the GIL
        self._lib = ctypes.PyDLL(_LIB._name)  # noqa: SLF001
        self._lib.LGBM_GetLastError.restype = ctypes.c_char_p
        self._config = ctypes.c_void_p()
        self._ncol = booster.num_feature()
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,  # noqa: SLF001 (no public handle; the C API needs it)
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: the objective's transformation
                ctypes.c_int(0),  # start_iteration
                ctypes.c_int(booster.best_iteration),  # <= 0: every tree, as predict()
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(self._ncol),
                b"num_threads=1",
                ctypes.byref(self._config),
            )
        )
        self._out = (ctypes.c_double * 64)()  # num_pred_in_one_row: 1 unless multiclass
        self._len = ctypes.c_int64(0)
        self._lock = threading.Lock()  # one output buffer per predictor

    def __call__(self, row: "Sequence[float | None]") -> float:
        """The booster's output for one row, ``len(row) == num_feature()`` (None: missing)."""
        data = self._np.asarray(row, dtype=self._np.float64)  # None -> NaN, as predict_row
        if data.shape != (self._ncol,):
            raise ValueError(f"{data.shape[0]} inputs, the model takes {self._ncol}")
        with self._lock:
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._config,
                    data.ctypes.data_as(self._ctypes.c_void_p),
                    self._ctypes.byref(self._len),
                    self._out,
                )
            )
            return float(self._out[0])

    def _check(self, code: int) -> None:
        if code != 0:
            from lightgbm.basic import LightGBMError

            raise LightGBMError(self._lib.LGBM_GetLastError().decode())

    def __del__(self) -> None:
        if getattr(self, "_config", None) is not None and self._config.value:
            self._lib.LGBM_FastConfigFree(self._config)


_row_predictors: "weakref.WeakKeyDictionary[Any, RowPredictor]" = weakref.WeakKeyDictionary()
_row_predictors_lock = threading.Lock()


def row_predictor(booster: "lgb.Booster") -> RowPredictor:
    """The booster's ``RowPredictor``, made at its first use, gone with the booster."""
    predictor = _row_predictors.get(booster)
    if predictor is None:
        with _row_predictors_lock:
            predictor = _row_predictors.get(booster)
            if predictor is None:
                predictor = _row_predictors[booster] = RowPredictor(booster)
    return predictor
