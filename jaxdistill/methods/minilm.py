"""minilm: placeholder, being written (issue #6)."""

TERMS = {}    # loss term name -> jaxdistill.train.term_types.Term
CONFIG = {}   # defaults of the config.minilm section
