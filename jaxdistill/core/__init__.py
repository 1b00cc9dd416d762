"""Core types every other layer builds on: model outputs and what to collect (`outputs`),
the train state and the teacher's step input (`state`), named RNG streams (`rng`) and the
user-facing errors (`errors`).

Importing this package imports nothing heavy: `errors` is plain Python, so the config
parser can use it without loading JAX; the other modules import JAX when imported.
"""
