"""Pure logic of features.

Builders, feature tables, the Feast store, stream pushes, training sets.
"""
