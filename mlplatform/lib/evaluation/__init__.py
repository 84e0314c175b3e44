"""Pure logic of evaluation.

Metrics, gates, paired comparisons, calibration, model cards, explanations.
"""
