"""Every trainer recipe under recipes/ loads and validates against the trainer's flags (torchtune's
test_configs.py); the YAML -> dotted-flag mapping and its error messages."""

from pathlib import Path

import pytest
import yaml

from mralign_plugin.cli.train_kto import make_parser
from mralign_plugin.recipe import (
    RecipeError,
    flatten,
    load_recipe,
    parser_flags,
    to_openrlhf_argv,
    validate_keys,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def trainer_recipes() -> list[Path]:
    """Recipes for `mralign train`: those with a kto section (others target other verbs)."""
    return sorted(p for p in RECIPES.glob("*.yaml") if "kto" in (yaml.safe_load(p.read_text()) or {}))


def test_the_three_trainer_recipes_exist():
    assert {"mralign.yaml", "kto.yaml", "tiny-cpu.yaml"} <= {p.name for p in trainer_recipes()}


@pytest.mark.parametrize("path", trainer_recipes(), ids=lambda p: p.name)
def test_recipe_validates_and_parses(path):
    parser = make_parser()
    valid, switches = parser_flags(parser)
    config = load_recipe(path)
    validate_keys(config, valid, switches)
    args = parser.parse_args(to_openrlhf_argv(config, switches))
    assert args.__dict__["model.model_name_or_path"]
    text = path.read_text()
    assert text.startswith("#") and "mralign train recipes/" + path.name in text  # launch command in the header


def test_paper_setup():
    parser = make_parser()
    valid, switches = parser_flags(parser)
    args = vars(parser.parse_args(to_openrlhf_argv(load_recipe(RECIPES / "mralign.yaml"), switches)))
    assert args["kto.beta"] == 0.1 and args["kto.desirable_weight"] == 1.0 and args["kto.undesirable_weight"] == 1.5
    assert args["ds.lora.rank"] == 32 and args["adam.lr"] == 5e-6 and args["train.max_epochs"] == 3
    assert args["lr_warmup_ratio"] == 0.1 and args["train.batch_size"] == 64 and args["ds.param_dtype"] == "bf16"
    assert args["mralign.weights"] is True
    kto = vars(parser.parse_args(to_openrlhf_argv(load_recipe(RECIPES / "kto.yaml"), switches)))
    assert kto["mralign.weights"] is False
    assert {k: v for k, v in kto.items() if not k.startswith(("ckpt.", "logger."))} == {
        k: v for k, v in args.items() if not k.startswith(("ckpt.", "logger.")) and k != "mralign.weights"
    } | {"mralign.weights": False}


def test_overrides_use_yaml_values(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kto:\n  beta: 0.1\nds:\n  lora:\n    rank: 32\n")
    config = load_recipe(path, ["kto.beta=0.05", "ds.lora.rank=null", "data.apply_chat_template=true",
                                "ds.lora.target_modules=[q_proj,v_proj]", "mralign.weights=off"])
    assert flatten(config) == {
        "kto.beta": 0.05, "data.apply_chat_template": True,
        "ds.lora.target_modules": ["q_proj", "v_proj"], "mralign.weights": False,
    }
    switches = {"data.apply_chat_template"}
    assert to_openrlhf_argv(config, switches) == [
        "--kto.beta", "0.05", "--ds.lora.target_modules", "q_proj", "v_proj", "--data.apply_chat_template",
        "--mralign.weights", "false",
    ]
    assert "--data.apply_chat_template" not in to_openrlhf_argv({"data": {"apply_chat_template": False}}, switches)


def test_unknown_key_lists_closest_valid_ones():
    valid, switches = parser_flags(make_parser())
    with pytest.raises(RecipeError, match=r"unknown key 'kto\.betta'; did you mean kto\.beta"):
        validate_keys({"kto": {"betta": 0.1}}, valid, switches)
    with pytest.raises(RecipeError, match="is a switch"):
        validate_keys({"data": {"apply_chat_template": "yes please"}}, valid, switches)


@pytest.mark.parametrize("override", ["kto.beta", "=3", "kto..beta=1"])
def test_malformed_override(tmp_path, override):
    path = tmp_path / "r.yaml"
    path.write_text("kto: {beta: 0.1}\n")
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe(path, [override])


def test_override_into_a_value_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kto: {beta: 0.1}\n")
    with pytest.raises(RecipeError, match="is a value, not a section"):
        load_recipe(path, ["kto.beta.x=1"])
