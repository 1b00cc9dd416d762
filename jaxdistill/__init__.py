"""jaxdistill: BERT compression by distillation and module replacement, in pure JAX."""

__version__ = "0.1.0"
