"""Pure logic of monitoring.

Outcomes, drift, skew, dashboards, alerts, retraining triggers, the replay's timeline.
"""
