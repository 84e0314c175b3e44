"""Pure logic of training: the seeded search and fit, the distributed fit."""
