"""Methods that are more than a sum of loss terms.

- `theseus`: BERT-of-Theseus module replacing (Xu et al. 2020): a mixed forward pass, a
  replacement-rate schedule, an optimizer mask and the replacing -> successor fine-tuning stages.
- `lad`: LAD's gate blocks (Lin et al.), registered as the loss term `lad` in train/terms.py.

Kept free of imports from jaxdistill.train so train/ can import these modules.
"""
