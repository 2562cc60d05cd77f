"""RFNet's caption encoders and a byte-level tokenizer (image backbones: :mod:`rfnet.backbones`).

Caption encoders map token ids ``(B, L)`` to ``(B, L, D)``: ``bert_tiny`` / ``bert_small`` (random
BERTs over :class:`ByteTokenizer`, no vocabulary download) and ``roberta_base`` (the paper; with
``caption_source`` its pretrained weights and tokenizer, otherwise random weights over bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines import models as pipeline_models


@dataclass
class CaptionBatch:
    """Tokenised captions: ``input_ids (B, L)`` long, ``attention_mask (B, L)`` long, 1 = token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device) -> CaptionBatch:
        return CaptionBatch(self.input_ids.to(device), self.attention_mask.to(device))


class ByteTokenizer:
    """UTF-8 bytes as tokens: ``[BOS] b+3 ... [EOS]`` padded with 0; any language tokenises.

    Ids: 0 pad, 1 BOS, 2 EOS, 3-258 bytes (vocabulary 259). Built in code, so random-weight caption
    encoders need no vocabulary files; captions longer than ``max_length - 2`` bytes are cut.
    """

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    VOCAB_SIZE = 259

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, captions: list[str]) -> CaptionBatch:
        rows = []
        for text in captions:
            data = text.encode("utf-8")[: self.max_length - 2]
            rows.append([self.BOS, *(b + self.OFFSET for b in data), self.EOS])
        length = max(len(r) for r in rows) if rows else 2
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return CaptionBatch(ids, mask)


class HFTokenizer:
    """A pretrained transformers tokenizer with the same call signature as :class:`ByteTokenizer`."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, captions: list[str]) -> CaptionBatch:
        enc = self.tokenizer(
            list(captions), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return CaptionBatch(enc["input_ids"], enc["attention_mask"])


def _caption_config(name: str, max_length: int, dropout: float):
    import transformers as tf

    common = {
        "vocab_size": ByteTokenizer.VOCAB_SIZE,
        "pad_token_id": ByteTokenizer.PAD,
        "bos_token_id": ByteTokenizer.BOS,
        "eos_token_id": ByteTokenizer.EOS,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
    }
    if name == "bert_tiny":
        return tf.BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=max_length, **common,
        )  # fmt: skip
    if name == "bert_small":
        return tf.BertConfig(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=max_length, **common,
        )  # fmt: skip
    if name == "roberta_base":
        # RoBERTa-base's shape; over bytes its 50k-entry vocabulary is unused beyond id 258.
        # RoBERTa positions start after padding_idx, hence max_length + 2 positions.
        return tf.RobertaConfig(
            max_position_embeddings=max(514, max_length + 2), **{**common, "vocab_size": 50265}
        )
    raise ValueError(
        f"unknown caption_encoder {name!r}; choose one of ('bert_tiny', 'bert_small', 'roberta_base')"
    )


class CaptionEncoder(nn.Module):
    """Caption text -> token features ``(B, L, D)``, with its tokenizer (``.tokenize``).

    Without ``source``: a random-init encoder over :class:`ByteTokenizer`. With ``source``: the
    pretrained tokenizer, and the pretrained weights if ``pretrained``. ``assets_dir`` (a saved
    RFNet checkpoint's ``caption/`` folder) replaces ``source`` for the tokenizer and the model
    config when a checkpoint is loaded, so loading needs no access to the original source.
    """

    def __init__(
        self,
        name: str,
        *,
        max_length: int,
        source: str | None = None,
        pretrained: bool = True,
        assets_dir: str | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        import transformers as tf

        self.name = name
        self.uses_pretrained_tokenizer = source is not None
        cls = tf.RobertaModel if name == "roberta_base" else tf.BertModel
        if source is None:
            self.tokenizer: ByteTokenizer | HFTokenizer = ByteTokenizer(max_length)
            self.model = cls(_caption_config(name, max_length, dropout), add_pooling_layer=False)
        else:
            if assets_dir is not None:
                path, revision = assets_dir, None
            else:
                path, revision = pipeline_models.materialize(pipeline_models.parse_source(source))
            self.tokenizer = HFTokenizer(
                tf.AutoTokenizer.from_pretrained(path, revision=revision), max_length
            )
            overrides = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
            if pretrained and assets_dir is None:
                self.model = cls.from_pretrained(
                    path, revision=revision, use_safetensors=True, add_pooling_layer=False, **overrides
                )
            else:
                config = tf.AutoConfig.from_pretrained(path, revision=revision, **overrides)
                self.model = cls(config, add_pooling_layer=False)
        self.out_channels = int(self.model.config.hidden_size)

    def save_assets(self, directory: str) -> bool:
        """Write the tokenizer files and model config a checkpoint needs; False if there are none."""
        if not isinstance(self.tokenizer, HFTokenizer):
            return False
        self.tokenizer.tokenizer.save_pretrained(directory)
        self.model.config.save_pretrained(directory)
        return True

    def tokenize(self, captions: list[str]) -> CaptionBatch:
        return self.tokenizer(captions)

    def forward(self, captions: CaptionBatch) -> torch.Tensor:
        return self.model(
            input_ids=captions.input_ids, attention_mask=captions.attention_mask
        ).last_hidden_state
