"""Pure logic of deployment.

The registry, the deployment log, rollout, the serving path, batch scoring.
"""
