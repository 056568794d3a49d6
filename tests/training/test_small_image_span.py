"""A from-scratch model with fewer resampler queries trains: the tokenizer's spans follow ``n_queries``.

(The picture paths written in the data must fit the span: 36 slots hold the generator's paths.)"""

from __future__ import annotations

import torch

from qvl_agent.data.synthetic import DataConfig, write_dataset
from qvl_agent.training.trainer import TrainConfig, Trainer, build_model

SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "kv_channels": 16,
    "intermediate_size": 64,
    "seq_length": 1024,
    "visual": {
        "heads": 2,
        "image_size": 48,
        "layers": 1,
        "mlp_ratio": 2.0,
        "output_dim": 32,
        "patch_size": 8,
        "width": 16,
        "n_queries": 36,
    },
}


def test_build_model_matches_the_tokenizer_span_to_the_queries(tmp_path) -> None:
    model, tokenizer = build_model(TrainConfig(output_dir=str(tmp_path), model_config=SMALL))
    assert tokenizer.image_span == model.transformer.visual.n_queries == 36
    assert len(tokenizer.encode("<img>a.png</img>")) == 36 + 2


def test_a_36_query_model_trains_and_saves(tmp_path) -> None:
    config = DataConfig(scene=DataConfig().scene.__class__(width=64, height=64), max_turns=1)
    data = str(write_dataset(tmp_path / "data", 2, "train", seed=0, config=config))
    trainer = Trainer(
        TrainConfig(
            output_dir=str(tmp_path / "run"),
            model_config=SMALL,
            data=data,
            batch_size=2,
            max_steps=2,
            warmup_steps=1,
            log_every=1,
            save_every=1000,
            eval_every=1000,
        ),
        progress=False,
    )
    trainer.train()
    from qvl_agent.model import load_model

    model, tokenizer = load_model(trainer.save_final())
    assert tokenizer.image_span == 36
    ids = tokenizer.encode("<img>x</img>hi")
    assert model(torch.tensor([ids]), pixel_values=torch.zeros(1, 3, 48, 48)).logits.isfinite().all()
