import dataclasses
import glob
import os

import pytest

from trtbuild.config import Config, config_from_dict, default_config, load_config, with_overrides
from trtbuild.errors import ConfigError, TrtbuildError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_of(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return str(info.value)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_shipped_configs_load(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.model.name == os.path.splitext(os.path.basename(path))[0]


def test_defaults_fill_missing_sections():
    config = config_from_dict({"model": {"name": "m"}})
    assert config.export.opset == 17
    assert config.export.tolerance == 1e-4
    assert config.data.buckets == (32, 64, 128, 256)
    assert config.workdir == os.path.join("out", "m")


def test_yaml_lists_become_tuples_and_profiles_dataclasses():
    config = config_from_dict({"model": {"name": "m"},
                               "build": {"profiles": [{"min": [1, 1], "opt": [8, 24], "max": [64, 32]}]}})
    assert config.build.profiles[0].opt == (8, 24)
    assert hash(config)  # frozen all the way down


def test_configs_are_frozen():
    config = config_from_dict({"model": {"name": "m"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.export.opset = 11


def test_unknown_key_named_with_its_path():
    assert error_of({"model": {"name": "m"}, "export": {"opset": 17, "opsett": 18}}) == \
        "export.opsett: unknown key (known: opset, max_length, tolerance, validate_batches, short_length, " \
        "attn_implementation, inputs, mask)"
    assert error_of({"model": {"name": "m"}, "exprot": {}}).startswith("exprot: unknown key")


def test_profile_max_below_opt_named_with_index():
    profiles = [{"min": [1, 1], "opt": [8, 32], "max": [64, 32]}] * 2 + [{"min": [1, 1], "opt": [8, 256], "max": [64, 128]}]
    assert error_of({"model": {"name": "m"}, "build": {"profiles": profiles}}) == \
        "build.profiles[2].max: must be >= opt (got [64, 128] < [8, 256])"


@pytest.mark.parametrize("data, message", [
    ({"model": {}}, "model.name: missing (this key is required)"),
    ({}, "model: missing (this key is required)"),
    ({"model": {"name": "m"}, "export": {"opset": "17"}}, "export.opset: must be an integer (got '17')"),
    ({"model": {"name": "m"}, "export": {"opset": 9}}, "export.opset: must be between 13 and 21 (got 9)"),
    ({"model": {"name": "m"}, "export": {"tolerance": -1}}, "export.tolerance: must be > 0 (got -1.0)"),
    ({"model": {"name": "m"}, "export": {"validate_batches": [1, 0]}}, "export.validate_batches[1]: must be >= 1 (got 0)"),
    ({"model": {"name": "m"}, "export": {"inputs": ["input_ids", "pixels"]}},
     "export.inputs[1]: must be one of input_ids, attention_mask, token_type_ids (got 'pixels')"),
    ({"model": {"name": "m"}, "data": {"buckets": [64, 32]}},
     "data.buckets[1]: must be > buckets[0] (buckets ascend; got 32 after 64)"),
    ({"model": {"name": "m"}, "data": {"buckets": 128}}, "data.buckets: must be a list (got 128)"),
    ({"model": {"name": "m"}, "build": {"profiles": [{"min": [1], "opt": [1, 1], "max": [1, 1]}]}},
     "build.profiles[0].min: must be a list of 2 values (got 1)"),
    ({"model": {"name": "m"}, "build": {"max_batch": 8, "profiles": [{"min": [1, 1], "opt": [8, 8], "max": [16, 8]}]}},
     "build.profiles[0].max: batch 16 exceeds build.max_batch 8"),
    ({"model": {"name": "m"}, "export": {"max_length": 128}}, "data.buckets[3]: 256 exceeds export.max_length 128"),
    ({"model": {"name": "bad name"}}, "model.name: must be letters, digits, '.', '_' or '-' (got 'bad name')"),
    ({"model": {"name": "m"}, "build": True}, "build: must be a mapping of keys to values (got True)"),
    ([1, 2], "must be a mapping of keys to values (got [1, 2])"),
])
def test_bad_values_rejected_with_key_path(data, message):
    assert error_of(data) == message


def test_load_config_reports_file_problems(tmp_path, write_config):
    with pytest.raises(TrtbuildError, match=r"^config file .*nope.yaml not found; pass an existing YAML"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(TrtbuildError, match=r"model.yaml line 3: not valid YAML \(expected "):
        load_config(write_config("model:\n  name: [unclosed\n"))
    with pytest.raises(ConfigError) as info:
        load_config(write_config("model:\n  name: m\nexport:\n  opset: 99\n"))
    assert str(info.value).startswith("export.opset: must be between 13 and 21 (got 99) (in ")


def test_overrides_and_default_config():
    config = default_config("my model/v2")
    assert config.model.name == "my-model-v2"
    config = with_overrides(config, checkpoint="ck", workdir="w")
    assert (config.model.checkpoint, config.workdir) == ("ck", "w")
