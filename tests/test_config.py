"""Config schema: loading, overrides, and one-line errors naming the dotted key."""

from pathlib import Path

import pytest

from hifi_tse.cli import main
from hifi_tse.config import ConfigError, config_from_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_full_config_matches_the_paper_system():
    cfg = load_config(CONFIGS / "hifi_tse.yaml")
    assert cfg.audio.sample_rate == 48000
    assert (cfg.stft.n_fft, cfg.stft.win_length, cfg.stft.hop_length) == (2048, 960, 480)
    assert cfg.model.feature_dim == 128 and cfg.model.num_blocks == 6
    assert cfg.model.lstm_hidden == 256 and cfg.model.num_heads == 4
    assert cfg.model.reinject_blocks == [0, 1, 2, 3, 4, 5]
    assert cfg.model.use_film and cfg.model.grad_checkpoint
    assert cfg.model.ref_dropout_prob == pytest.approx(0.1)
    lw = cfg.loss_weights
    assert (lw.lambda_sep, lw.lambda_phase, lw.lambda_amp) == (1.0, 0.5, 10.0)
    assert lw.ta_weight == pytest.approx(0.1) and lw.ta_target_db == -30.0
    assert lw.ta_loss == "relu"


@pytest.mark.parametrize("name", ["hifi_tse.yaml", "tiny.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    load_config(CONFIGS / name)


def test_over_suppression_experiment_keeps_the_config_it_was_measured_with():
    """docs/over_suppression.md was measured on the demo config of 2026-11-25; the experiment
    reads its own copy, so later changes to configs/demo.yaml cannot change what it runs."""
    cfg = load_config(CONFIGS.parent / "experiments" / "over_suppression.yaml")
    assert (cfg.stft.n_fft, cfg.stft.hop_length, cfg.train.batch_size) == (512, 256, 8)
    assert cfg.loss_weights.ta_target_db == -30.0 and cfg.loss_weights.ta_weight == 0.1
    assert cfg.model.ref_dropout_prob == 0.05 and not cfg.band_split.bin_shape


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"model": {"feature_dimm": 3}}, "model.feature_dimm: unknown key"),
        ({"model": {"feature_dim": "big"}}, "model.feature_dim: expected an integer"),
        ({"loss_weights": {"ta_weight": 1.5}}, "loss_weights.ta_weight: expected <= 1.0"),
        ({"loss_weights": {"ta_loss": "db"}}, "loss_weights.ta_loss: expected one of"),
        ({"model": {"use_film": "yes"}}, "model.use_film: expected true/false"),
        ({"band_split": {"regions": [{"upper_hz": 1.0, "width": 3}]}}, "regions[0].width"),
        ({"data": {"snr_db": [10.0, 0.0]}}, "data.snr_db: expected [low, high]"),
        ({"nosuch": {}}, "nosuch: unknown key"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number"),
        ({"train": {"lr": "nan"}}, "train.lr: expected a finite number"),
    ],
)
def test_bad_values_name_the_dotted_key(data, fragment):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_set_overrides_parse_yaml_values_and_validate():
    cfg = load_config(CONFIGS / "tiny.yaml", ["model.num_blocks=3", "model.use_film=false"])
    assert cfg.model.num_blocks == 3 and cfg.model.use_film is False
    # YAML 1.1 reads "1e-4" as a string; a float key still takes it
    assert load_config(CONFIGS / "tiny.yaml", ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="train.lr: expected <= 1.0"):
        load_config(CONFIGS / "tiny.yaml", ["train.lr=5"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["lr"])


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", ["train.steps=177"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_cli_prints_one_line_message_for_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_heads: 0\n")
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.num_heads: expected >= 1" in err


def test_builtin_config_names_resolve_from_any_folder(tmp_path, monkeypatch):
    from hifi_tse.config import ConfigError, builtin_configs, load_config, resolve_config_path

    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert builtin_configs() == ["demo", "hifi_tse", "tiny"]
    assert resolve_config_path("demo").name == "demo.yaml"
    assert load_config("tiny.yaml").audio.sample_rate == 16000
    assert load_config("hifi_tse").audio.sample_rate == 48000
    (tmp_path / "demo.yaml").write_text("audio:\n  sample_rate: 8000\n")
    assert load_config("demo.yaml").audio.sample_rate == 8000  # a file of that name wins
    with pytest.raises(ConfigError, match="built-in configs: demo, hifi_tse, tiny"):
        load_config("nonexistent")
    with pytest.raises(ConfigError, match="not found"):
        load_config("some/dir/demo.yaml")


def test_every_recipe_loads():
    from hifi_tse.config import BUILTIN_CONFIG_DIR

    recipes = sorted((BUILTIN_CONFIG_DIR / "recipes").glob("*.yaml"))
    assert recipes, "configs/recipes holds the resolved config of each shipped-model stage"
    for path in recipes:
        cfg = load_config(path)
        assert cfg.audio.sample_rate == 16000, path


def test_retired_keys_load_only_at_their_fixed_value():
    from hifi_tse.config import RETIRED_KEYS, schema_rows

    # A config written before the keys left (every key at its value of then) still loads ...
    old = {"model": {"mask_limit": 0.0, "presence_gain": False, "feature_dim": 8}}
    old["loss_weights"] = {"lambda_mrstft": 0, "audit_examples": 32}
    cfg = config_from_dict(old)
    assert cfg.model.feature_dim == 8 and not hasattr(cfg.model, "mask_limit")
    # ... but a value that asked for the removed behaviour is a one-line error naming it.
    with pytest.raises(ConfigError, match=r"model\.mask_limit: removed .*got 2\.0"):
        config_from_dict({"model": {"mask_limit": 2.0}})
    with pytest.raises(ConfigError, match="audit-loss --examples"):
        config_from_dict({"loss_weights": {"audit_examples": 4}})
    assert not {row[0] for row in schema_rows()} & set(RETIRED_KEYS)


def test_a_checkpoint_written_with_retired_keys_still_loads():
    """The shipped demo model was saved when the retired keys were still in the schema."""
    import torch

    from hifi_tse.config import RETIRED_KEYS
    from hifi_tse.infer.loading import load_generator

    shipped = CONFIGS.parent / "models" / "demo_model.pt"
    ckpt = torch.load(shipped, map_location="cpu", weights_only=True)
    stored = {f"{s}.{k}" for s, keys in ckpt["config"].items() for k in keys}
    assert stored & set(RETIRED_KEYS)
    model, cfg = load_generator(shipped)
    assert cfg.audio.sample_rate == 16000 and model.film is not None


def test_schema_marks_the_architecture_keys():
    from hifi_tse.config import architecture_keys

    arch = set(architecture_keys())
    assert {"model.feature_dim", "stft.n_fft", "band_split.regions", "gan.periods"} <= arch
    # training-time switches of the model section, and everything outside the network
    assert not {"model.grad_checkpoint", "model.ref_dropout_prob", "train.lr", "gan.lr"} & arch
