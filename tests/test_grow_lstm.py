"""--init-from into wider backbone LSTMs (a larger ``model.lstm_hidden``): the wider model
starts as the checkpoint, its new units are live, and it trains away from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import SR, tiny_config, voice

from hifi_tse.errors import UserError
from hifi_tse.models.generator import build_generator


def _seeded(cfg, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_generator(cfg).eval()
    with torch.no_grad():  # a mask that depends on the features (not pass-through)
        model.decoder.out_weight.normal_(std=0.1)
    return model


@pytest.mark.parametrize("causal", [False, True])
def test_wider_lstms_start_as_the_checkpoint_and_train(tmp_path, causal: bool) -> None:
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.train.setup import warm_start

    cfg = tiny_config()
    cfg.model.causal = causal
    small = _seeded(cfg, seed=0)
    path = tmp_path / "small.pt"
    save_generator_checkpoint(path, small, cfg)
    old = cfg.model.lstm_hidden
    cfg.model.lstm_hidden = old + 8
    torch.manual_seed(1)
    wide = build_generator(cfg).eval()
    copied, new = warm_start(wide, path)
    assert new == [] and copied == len(small.state_dict())

    lstm = wide.backbone.stages[0].block.inter.lstm
    assert lstm.hidden_size == old + 8
    for gate in range(4):  # the checkpoint's rows in each gate's block, the new rows live
        rows = slice(gate * (old + 8), gate * (old + 8) + old)
        src = small.backbone.stages[0].block.inter.lstm.weight_ih_l0[gate * old : (gate + 1) * old]
        assert torch.equal(lstm.weight_ih_l0[rows], src)
        assert lstm.weight_hh_l0[rows, old:].abs().sum() == 0
        assert lstm.weight_ih_l0[gate * (old + 8) + old : (gate + 1) * (old + 8)].abs().sum() > 0
    proj = wide.backbone.stages[0].block.inter.proj.weight
    directions = 1 if causal else 2
    assert proj.shape[1] == directions * (old + 8)
    assert proj[:, old : old + 8].abs().sum() == 0

    rng = np.random.default_rng(2)
    mix = torch.from_numpy(voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR))[None]
    ref = torch.from_numpy(voice(rng, 130.0, 1.0, SR))[None]
    with torch.no_grad():
        want, got = small(mix, ref), wide(mix, ref)
    assert want.abs().max() > 0.01
    assert torch.allclose(got, want, atol=1e-6)

    # The new units' output columns get a gradient and leave zero after one update.
    wide.train()
    opt = torch.optim.Adam(wide.parameters(), lr=1e-3)
    wide(mix, ref).pow(2).mean().backward()
    opt.step()
    assert proj[:, old : old + 8].abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(wide.eval()(mix, ref), want, atol=1e-6)


def test_narrower_lstms_are_refused_with_the_shapes(tmp_path) -> None:
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.train.setup import warm_start

    cfg = tiny_config()
    path = tmp_path / "wide.pt"
    save_generator_checkpoint(path, _seeded(cfg, seed=0), cfg)
    cfg.model.lstm_hidden -= 8
    with pytest.raises(UserError, match=r"other shapes.*lstm\.weight_ih_l0"):
        warm_start(build_generator(cfg), path)
