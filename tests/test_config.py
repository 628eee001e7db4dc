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
    lw = cfg.objective
    assert (lw.lambda_sep, lw.lambda_phase, lw.lambda_amp) == (1.0, 0.5, 10.0)
    assert lw.ta_weight == pytest.approx(0.1) and lw.ta_target_db == -30.0
    assert lw.ta_loss == "relu"


@pytest.mark.parametrize("name", ["hifi_tse.yaml", "tiny.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    load_config(CONFIGS / name)


def test_over_suppression_experiment_keeps_the_config_it_was_measured_with():
    """docs/history/over_suppression_mechanism.md was measured on the demo config of 2026-11-25;
    the experiment reads its own copy, so later changes to configs/demo.yaml cannot change what
    it runs."""
    cfg = load_config(CONFIGS.parent / "experiments" / "over_suppression.yaml")
    assert (cfg.stft.n_fft, cfg.stft.hop_length, cfg.train.batch_size) == (512, 256, 8)
    assert cfg.objective.ta_target_db == -30.0 and cfg.objective.ta_weight == 0.1
    assert cfg.model.ref_dropout_prob == 0.05 and not cfg.band_split.bin_shape


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"model": {"feature_dimm": 3}}, "model.feature_dimm: unknown key"),
        ({"model": {"feature_dim": "big"}}, "model.feature_dim: expected an integer"),
        ({"objective": {"ta_weight": 1.5}}, "objective.ta_weight: expected <= 1.0"),
        ({"objective": {"ta_loss": "db"}}, "objective.ta_loss: expected one of"),
        # keys under their old section names are checked (and named) as the keys they are now
        ({"loss_weights": {"ta_weight": 1.5}}, "objective.ta_weight: expected <= 1.0"),
        ({"data": {"snr_db": [10.0, 0.0]}}, "mixing.snr_db: expected [low, high]"),
        ({"data": {"nosuch": 1}}, "data.nosuch: unknown key (the data keys are now under mixing"),
        ({"data": {"ta_ratio": 0.1}, "mixing": {"ta_ratio": 0.3}}, "mixing.ta_ratio: given twice"),
        ({"model": {"use_film": "yes"}}, "model.use_film: expected true/false"),
        ({"band_split": {"regions": [{"upper_hz": 1.0, "width": 3}]}}, "regions[0].width"),
        ({"mixing": {"snr_db": [10.0, 0.0]}}, "mixing.snr_db: expected [low, high]"),
        ({"preparation": {"sim_rt60": [0.9, 0.1]}}, "preparation.sim_rt60: expected [low, high]"),
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


def test_a_checkpoint_written_with_retired_keys_still_loads(tmp_path):
    """A checkpoint saved when the retired keys and the old section names were in the schema
    (stage 8's config as it was written) loads."""
    import torch
    import yaml

    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.config import RETIRED_KEYS
    from hifi_tse.infer.loading import load_generator
    from hifi_tse.models.generator import build_generator

    old = yaml.safe_load(OLD_STAGE8.read_text())
    stored = {f"{s}.{k}" for s, keys in old.items() for k in keys}
    assert stored & set(RETIRED_KEYS) and {"loss_weights", "data"} <= set(old)
    path = tmp_path / "old.pt"
    save_generator_checkpoint(path, build_generator(config_from_dict(old)), config_from_dict(old))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["config"] = old  # the dict as the old code wrote it
    torch.save(ckpt, path)
    model, cfg = load_generator(path)
    assert cfg.audio.sample_rate == 16000 and model.film is not None
    assert cfg.objective.ta_target_db == old["loss_weights"]["ta_target_db"]


def test_schema_marks_the_architecture_keys():
    from hifi_tse.config import architecture_keys

    arch = set(architecture_keys())
    assert {"model.feature_dim", "stft.n_fft", "band_split.regions", "gan.periods"} <= arch
    # training-time switches of the model section, and everything outside the network
    assert not {"model.grad_checkpoint", "model.ref_dropout_prob", "train.lr", "gan.lr"} & arch


# --------------------------------------------------------------------- sections and renames

OLD_STAGE8 = Path(__file__).resolve().parent / "fixtures" / "demo_model_stage8_old_layout.yaml"


def test_sections_are_grouped_by_reader_in_order():
    from hifi_tse.config import Config

    assert list(Config().to_dict()) == [
        "audio", "stft", "band_split", "model",  # the model group
        "objective", "mixing", "preparation", "train", "gan", "health",
    ]  # fmt: skip


def test_an_old_layout_config_loads_to_the_same_values():
    """configs/recipes/demo_model_stage8.yaml as it was written (loss_weights, data, and every
    key since retired at its fixed value) resolves to the recipe file of today."""
    import yaml

    from hifi_tse.config import BUILTIN_CONFIG_DIR

    old = yaml.safe_load(OLD_STAGE8.read_text())
    assert {"loss_weights", "data"} <= set(old) and "norm_eps" in old["model"]
    recipes = BUILTIN_CONFIG_DIR / "recipes"
    stage8 = load_config(recipes / "demo_model_stage8.yaml")
    assert config_from_dict(old) == load_config(OLD_STAGE8) == stage8
    assert stage8.objective.ta_target_db == old["loss_weights"]["ta_target_db"] == -45.0
    assert stage8.mixing.speed_perturb is old["data"]["speed_perturb"] is True
    assert stage8.preparation.min_seconds == old["data"]["min_seconds"] == 1.5
    # the stage-9 recipe is stage 8's with fewer steps (the two files always differed so)
    stage9 = load_config(recipes / "demo_model_stage9.yaml")
    assert stage9 == load_config(OLD_STAGE8, ["train.steps=22000"])


def test_recipes_are_written_in_the_current_layout():
    import yaml

    from hifi_tse.config import BUILTIN_CONFIG_DIR, Config

    for path in sorted((BUILTIN_CONFIG_DIR / "recipes").glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# Resolved config of stage"), path  # header kept
        # resolved: every key of today's schema, nothing else
        assert yaml.safe_load(text) == load_config(path).to_dict(), path
        assert set(yaml.safe_load(text)) == set(Config().to_dict()), path


@pytest.mark.parametrize(
    "model, recipe",
    [("demo_model.pt", "demo_model_stage14"), ("demo_causal_model.pt", "demo_causal_model_stage2")],
)
def test_the_shipped_models_configs_are_their_recipes(model, recipe):
    import torch

    from hifi_tse.config import BUILTIN_CONFIG_DIR

    shipped = CONFIGS.parent / "models" / model
    stored = torch.load(shipped, map_location="cpu", weights_only=True)["config"]
    recipe_cfg = load_config(BUILTIN_CONFIG_DIR / "recipes" / f"{recipe}.yaml")
    assert config_from_dict(stored) == recipe_cfg


@pytest.mark.parametrize(
    "old, new",
    [
        ("data.ta_ratio=0.3", "mixing.ta_ratio=0.3"),
        ("data.min_seconds=2.5", "preparation.min_seconds=2.5"),
        ("loss_weights.ta_weight=0.25", "objective.ta_weight=0.25"),
    ],
)
@pytest.mark.parametrize("base", [CONFIGS / "tiny.yaml", OLD_STAGE8], ids=["new", "old"])
def test_old_and_new_override_names_set_the_same_key(old, new, base):
    cfg = load_config(base, [old])
    assert cfg == load_config(base, [new]) != load_config(base)
    dotted, value = new.split("=")
    section, key = dotted.split(".")
    assert getattr(getattr(cfg, section), key) == float(value)


def test_set_with_an_old_name_on_the_command_line(capsys):
    outputs = []
    for item in ("data.ta_ratio=0.3", "mixing.ta_ratio=0.3"):
        assert main(["config", "--config", str(CONFIGS / "tiny.yaml"), "--set", item]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "mixing:\n  ta_ratio: 0.3\n" in outputs[0]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"model": {"norm_eps": 1e-6}}, r"model\.norm_eps: removed .*NORM_EPS"),
        ({"loss_weights": {"eps": 1e-6}}, r"loss_weights\.eps: removed .*LOSS_EPS"),
        ({"loss_weights": {"amp_min_ratio": 0.1}}, r"loss_weights\.amp_min_ratio: .*invariant 2"),
        ({"data": {"peak_norm": 0.5}}, r"data\.peak_norm: removed .*got 0\.5.*PEAK_NORM"),
        ({"data": {"speed_range": [0.8, 1.2]}}, r"data\.speed_range: removed .*SPEED_RANGE"),
        ({"data": {"pack_files": 4}}, r"data\.pack_files: removed .*PACK_FILES"),
        ({"data": {"sim_room_min": [6.0, 5.0, 3.0]}}, r"data\.sim_room_min: .*SIM_ROOM_MIN_M"),
        ({"train": {"betas": [0.8, 0.99]}}, r"train\.betas: removed .*ADAMW_BETAS"),
        ({"train": {"max_nonfinite": 3}}, r"train\.max_nonfinite: .*MAX_NONFINITE_STEPS"),
        ({"train": {"val_seed": 7}}, r"train\.val_seed: removed .*VAL_SEED"),
    ],
)
def test_a_retired_key_at_another_value_is_refused_in_one_line(data, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        config_from_dict(data)
    assert "\n" not in str(info.value)


def test_a_retired_key_at_another_value_fails_as_an_override_too(capsys):
    with pytest.raises(ConfigError, match=r"data\.clip_peak: removed .*CLIP_PEAK"):
        load_config(CONFIGS / "tiny.yaml", ["data.clip_peak=0.99"])
    # at its fixed value (also as YAML reads "1e-5": a string) it loads, as before
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert (
        load_config(CONFIGS / "tiny.yaml", ["data.clip_peak=0.95", "model.norm_eps=1e-5"]) == tiny
    )
    assert main(["config", "--set", "train.weight_decay=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.weight_decay: removed" in err


def test_every_old_name_maps_to_a_key_of_the_schema():
    from hifi_tse.config import RENAMED_KEYS, RETIRED_KEYS, schema_rows

    keys = {row[0] for row in schema_rows()}
    assert len(keys) == 90
    assert set(RENAMED_KEYS.values()) <= keys
    assert not set(RENAMED_KEYS) & (keys | set(RETIRED_KEYS))
    # every key of the regrouped sections had an old name: old configs set all of them
    regrouped = {k for k in keys if k.split(".")[0] in ("objective", "mixing", "preparation")}
    # no old name: these came later
    added_since = {"mixing.synthetic_share", "mixing.channel_prob", "mixing.dense_target_prob"}
    assert regrouped - added_since == set(RENAMED_KEYS.values())


def test_each_retired_key_loads_at_the_value_of_the_constant_that_replaced_it():
    """Old configs load only where they asked for today's behaviour: the retired key's fixed
    value is the constant's (so nothing changed for the runs that wrote them)."""
    from hifi_tse.config import RETIRED_KEYS
    from hifi_tse.data import datasets, mixer, prepare, rir
    from hifi_tse.losses import objective, separation
    from hifi_tse.models import generator
    from hifi_tse.train import setup, trainer

    constants = {
        "model.norm_eps": generator.NORM_EPS,
        "loss_weights.eps": separation.LOSS_EPS,
        "loss_weights.amp_min_ratio": objective.AMP_MIN_RATIO,
        "data.peak_norm": mixer.PEAK_NORM,
        "data.clip_peak": mixer.CLIP_PEAK,
        "data.noise_prob": mixer.NOISE_PROB,
        "data.speed_range": mixer.SPEED_RANGE,
        "data.ref_snr_db": mixer.REF_SNR_DB,
        "data.pack_files": prepare.PACK_FILES,
        "data.sim_room_min": rir.SIM_ROOM_MIN_M,
        "data.sim_room_max": rir.SIM_ROOM_MAX_M,
        "train.betas": setup.ADAMW_BETAS,
        "train.weight_decay": setup.ADAMW_WEIGHT_DECAY,
        "train.max_nonfinite": trainer.MAX_NONFINITE_STEPS,
        "train.val_seed": datasets.VAL_SEED,
    }
    for key, constant in constants.items():
        value = list(constant) if isinstance(constant, tuple) else constant
        assert RETIRED_KEYS[key][0] == value, key
