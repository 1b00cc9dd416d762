"""The trainer: `python -m jaxdistill.train --config configs/<x>.py`."""
