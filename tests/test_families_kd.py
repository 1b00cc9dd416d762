"""The RoBERTa path end to end: the offline tiny RoBERTa (byte-level BPE tokenizer + random
model) and configs/roberta_kd.py:tiny through the CLI, both stages, to exports transformers
loads as RobertaForSequenceClassification."""

import json

import pytest
import transformers

from jaxdistill.models import hub
from jaxdistill.models.tiny_families import tiny_roberta_checkpoint
from jaxdistill.train.__main__ import main


def test_tiny_roberta_checkpoint_is_a_real_roberta(tmp_path):
  d = tiny_roberta_checkpoint(tmp_path / "r", max_length=32)
  assert tiny_roberta_checkpoint(tmp_path / "r") == d  # reused, not rebuilt
  tok = transformers.AutoTokenizer.from_pretrained(str(d))
  assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
  ids = tok(["a warm movie", "Naïve café 🎬 東京"], padding=True)["input_ids"]
  assert ids[0][0] == 0 and ids[0][-1] == 1 and tok.unk_token_id not in sum(ids, [])
  model, fresh = hub.load_pretrained(str(d))
  assert fresh == [] and model.config.family == "roberta" and model.config.vocab_size == len(tok)
  back, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(d), output_loading_info=True)
  assert type(back).__name__ == "RobertaForSequenceClassification" and not any(info.values())


@pytest.mark.slow
def test_roberta_kd_tiny_runs_end_to_end(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  code = main(["--config", "configs/roberta_kd.py:tiny", "--workdir", str(tmp_path / "run"),
               f"--config.cache_dir={tmp_path / 'cache'}"])
  out = capsys.readouterr().out
  assert code == 0 and "Compression report" in out
  for export in (tmp_path / "run" / "export", tmp_path / "run" / "teacher" / "export"):
    assert (export / "DONE").exists()
    assert json.loads((export / "config.json").read_text())["model_type"] == "roberta"
    back, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(export), output_loading_info=True)
    assert type(back).__name__ == "RobertaForSequenceClassification" and not any(info.values())
    assert (export / "merges.txt").exists()  # the BPE tokenizer travels with the export
