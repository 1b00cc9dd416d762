"""Methods that are more than a sum of loss terms.

- `theseus`: BERT-of-Theseus module replacing (Xu et al. 2020): a mixed forward pass, a
  replacement-rate schedule, an optimizer mask and the replacing -> successor fine-tuning stages.
- `lad`: LAD's gate blocks (Lin et al.), registered as the loss term `lad` in train/terms.py.
- `tinybert`, `minilm`, `distilbert`, `mobilebert`, `bilstm`: each a module with
  `TERMS` (loss term name -> Term, merged into train/terms.py's registry), `CONFIG` (the
  defaults of its `config.<module>` section) and optionally `STAGE_RUNNERS` (stage kind ->
  runner, see train/stages.py).

Kept free of imports from jaxdistill.train other than train/term_types.py, so train/ can
import these modules.
"""

from jaxdistill.methods import bilstm, distilbert, lad, minilm, mobilebert, theseus, tinybert

METHOD_MODULES = (tinybert, minilm, distilbert, mobilebert, bilstm)
