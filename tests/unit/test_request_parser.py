"""The scaffolding request parser and the model configs, with no Triton: tensors as numpy
arrays and request parameters as Triton hands them over (a JSON string)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaffolding_backend.kernel.params import InvalidParameter
from scaffolding_backend.service.config import (
    ConfigError,
    GeneratorConfig,
    RewardConfig,
    ScaffoldingConfig,
)
from scaffolding_backend.service.job import parse_job

CONFIG = ScaffoldingConfig()
QUESTION = "Tom has 5 apples. He buys 3 more apples. How many apples does Tom have now?"


def tensors(**values):
    """Input tensors as the Triton model hands them to the parser: [1]-shaped arrays."""
    arrays = {"text_input": np.array([QUESTION.encode()], dtype=np.object_)}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, (str, bytes)):
            data = value if isinstance(value, bytes) else value.encode()
            arrays[name] = np.array([data], dtype=np.object_)
        elif isinstance(value, bool):
            arrays[name] = np.array([value], dtype=np.bool_)
        elif isinstance(value, float):
            arrays[name] = np.array([value], dtype=np.float32)
        else:
            arrays[name] = np.array([value], dtype=np.uint64)
    return arrays


def parse(arrays=None, parameters="{}", *, decoupled=True, config=CONFIG):
    return parse_job(
        arrays if arrays is not None else tensors(), parameters, config, decoupled=decoupled
    )


GOOD = [
    # (tensors, request parameters, what the job must say)
    ({}, "{}", {"method": "majority_vote", "seed": 0, "deadline_s": 300.0, "stream": False}),
    ({"method": "cot"}, "{}", {"method": "cot"}),
    ({}, json.dumps({"method": "beam_search"}), {"method": "beam_search"}),
    ({"method": "cot"}, json.dumps({"method": "beam_search"}), {"method": "cot"}),  # tensor wins
    ({"seed": 7}, "{}", {"seed": 7}),
    ({}, json.dumps({"seed": 9}), {"seed": 9}),
    ({"method_parameters": json.dumps({"seed": 11})}, "{}", {"seed": 11}),
    ({"seed": 2**64 - 1}, "{}", {"seed": 2**64 - 1}),
    ({"deadline_s": 2.5}, "{}", {"deadline_s": 2.5}),
    ({}, json.dumps({"deadline_s": 10}), {"deadline_s": 10.0}),
    ({"stream": True}, "{}", {"stream": True}),
    ({"stream": True}, json.dumps({"stream_tokens": True}), {"stream_tokens": True}),
    ({}, json.dumps({"reward_model": "reward_orm"}), {"reward_model": "reward_orm"}),
    ({"method_parameters": json.dumps({"samples": 4})}, "{}", {"params.samples": 4}),
    (
        {},
        json.dumps({"samples": 3, "temperature": 0.5}),
        {"params.samples": 3, "params.temperature": 0.5},
    ),
    # the method_parameters tensor is stronger than request parameters
    (
        {"method_parameters": json.dumps({"samples": 5})},
        json.dumps({"samples": 2}),
        {"params.samples": 5},
    ),
    (
        {"method": "mcts", "method_parameters": json.dumps({"exploration": 2})},
        "{}",
        {"params.exploration": 2.0},
    ),
    (
        {"method": "beam_search", "method_parameters": json.dumps({"samples": 8, "beam_width": 4})},
        "",
        {"params.beam_width": 4},
    ),
    ({}, "", {"method": "majority_vote"}),  # empty request parameters
]


@pytest.mark.parametrize(("inputs", "parameters", "expected"), GOOD)
def test_good_requests_parse_into_a_typed_job(inputs, parameters, expected):
    job = parse(tensors(**inputs), parameters)
    assert job.question == QUESTION
    for key, value in expected.items():
        owner, _, name = key.rpartition(".")
        assert getattr(job.params if owner else job, name) == value, key


BAD = [
    # (tensors, request parameters, the field the error must name, decoupled)
    ({"text_input": "   "}, "{}", "text_input", True),
    ({"text_input": b"\xff\xfe"}, "{}", "text_input", True),
    ({"text_input": np.array([b"a", b"b"], dtype=np.object_)}, "{}", "text_input", True),
    ({"method": "telepathy"}, "{}", "method", True),
    ({}, json.dumps({"method": 3}), "method", True),
    ({}, "{not json", "parameters", True),
    ({}, "[1, 2]", "parameters", True),
    ({"method_parameters": "{not json"}, "{}", "method_parameters", True),
    ({"method_parameters": "[]"}, "{}", "method_parameters", True),
    ({"method_parameters": "[" * 10000 + "]" * 10000}, "{}", "method_parameters", True),
    (
        {"method_parameters": json.dumps({"a": {"b": {"c": 1}}} | {"x": "y" * 70000})},
        "{}",
        "method_parameters",
        True,
    ),
    ({}, json.dumps({"seed": -1}), "seed", True),
    ({}, json.dumps({"seed": 2**64}), "seed", True),
    ({}, json.dumps({"seed": True}), "seed", True),
    ({}, json.dumps({"seed": 1.5}), "seed", True),
    ({}, json.dumps({"seed": "7"}), "seed", True),
    ({"deadline_s": 0.0}, "{}", "deadline_s", True),
    ({"deadline_s": -1.0}, "{}", "deadline_s", True),
    ({}, json.dumps({"deadline_s": 1e9}), "deadline_s", True),
    ({}, '{"deadline_s": NaN}', "deadline_s", True),
    ({}, '{"deadline_s": Infinity}', "deadline_s", True),
    ({"stream": True}, "{}", "stream", False),
    ({}, json.dumps({"stream": "yes"}), "stream", True),
    ({}, json.dumps({"stream_tokens": True}), "stream_tokens", True),
    ({"stream": True}, json.dumps({"stream_tokens": 1}), "stream_tokens", True),
    ({}, json.dumps({"reward_model": "generator"}), "reward_model", True),
    ({}, json.dumps({"samples": 65}), "samples", True),
    ({}, json.dumps({"samples": 0}), "samples", True),
    ({}, json.dumps({"samples": "8"}), "samples", True),
    ({}, json.dumps({"samples": True}), "samples", True),
    ({}, json.dumps({"temperature": -0.5}), "temperature", True),
    ({}, '{"temperature": NaN}', "temperature", True),
    ({}, '{"temperature": Infinity}', "temperature", True),
    ({}, json.dumps({"top_p": 1.5}), "top_p", True),
    ({}, json.dumps({"top_k": 2**31}), "top_k", True),
    ({}, json.dumps({"top_k": 10**20}), "top_k", True),
    ({}, json.dumps({"max_tokens": 1025}), "max_tokens", True),
    ({}, json.dumps({"bogus": 1}), "bogus", True),
    ({"method": "mcts"}, '{"exploration": NaN}', "exploration", True),
    ({"method": "mcts"}, json.dumps({"value": "oracle"}), "value", True),
    ({"method": "beam_search"}, json.dumps({"samples": 4, "beam_width": 8}), "beam_width", True),
    ({"method": "dvts"}, json.dumps({"samples": 8, "beam_width": 3}), "beam_width", True),
    ({"method": "best_of_n"}, json.dumps({"aggregation": "median"}), "aggregation", True),
    ({"method": "beam_search"}, json.dumps({"max_steps": 33}), "max_steps", True),
]


@pytest.mark.parametrize(("inputs", "parameters", "field", "decoupled"), BAD)
def test_bad_requests_are_refused_naming_the_field(inputs, parameters, field, decoupled):
    with pytest.raises(InvalidParameter) as refused:
        parse(tensors(**inputs), parameters, decoupled=decoupled)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")


def test_a_missing_question_is_refused():
    with pytest.raises(InvalidParameter, match="text_input"):
        parse({}, "{}")


def test_request_options_never_reach_the_method_as_knobs():
    job = parse(tensors(seed=3), json.dumps({"seed": 4, "deadline_s": 5, "reward_model": "reward"}))
    assert job.seed == 3 and job.deadline_s == 5.0
    assert not hasattr(job.params, "seed") and not hasattr(job.params, "deadline_s")


def test_defaults_that_exceed_the_caps_shrink_but_requests_beyond_them_are_refused():
    config = ScaffoldingConfig(max_samples=4, max_tokens=64)
    job = parse(config=config)
    assert job.params.samples == 4 and job.params.max_tokens == 64
    with pytest.raises(InvalidParameter, match="samples"):
        parse(tensors(), json.dumps({"samples": 5}), config=config)


# -- configuration ----------------------------------------------------------------------


def test_config_defaults_are_written_once_and_override_in_order():
    assert ScaffoldingConfig.load({}, environ={}) == ScaffoldingConfig()
    loaded = ScaffoldingConfig.load(
        {"max_samples": "16", "reward_models": "reward, reward_orm,custom"},
        environ={
            "SCAFFOLDING_CONFIG_OVERRIDES": json.dumps({"max_samples": 8, "bls_threads": "32"})
        },
    )
    assert loaded.max_samples == 8 and loaded.bls_threads == 32
    assert loaded.reward_models == ("reward", "reward_orm", "custom")
    assert loaded.caps.max_samples == 8


@pytest.mark.parametrize(
    ("parameters", "overrides", "key"),
    [
        ({"max_tokenz": "5"}, None, "max_tokenz"),
        ({}, {"generator_modle": "ensemble"}, "generator_modle"),
        ({"max_tokens": "-5"}, None, "max_tokens"),
        ({"max_samples": "0"}, None, "max_samples"),
        ({"bls_threads": "0"}, None, "bls_threads"),
        ({"max_tasks": "many"}, None, "max_tasks"),
        ({"default_deadline_s": "3000"}, None, "default_deadline_s"),
        ({"default_deadline_s": "nan"}, None, "default_deadline_s"),
        ({"default_method": "telepathy"}, None, "default_method"),
        ({"generator_contract": "tgi"}, None, "generator_contract"),
        ({"generator_decoupled": "maybe"}, None, "generator_decoupled"),
        ({"prompt_template": "Q:"}, None, "prompt_template"),
        ({"step_delimiter": ""}, None, "step_delimiter"),
        ({"loop_stall_exit_s": "-1"}, None, "loop_stall_exit_s"),
        ({}, {"max_samples": 2.5}, "max_samples"),
        ({}, {"max_samples": True}, "max_samples"),
    ],
)
def test_bad_configuration_refuses_to_load_naming_the_key(parameters, overrides, key):
    environ = {"SCAFFOLDING_CONFIG_OVERRIDES": json.dumps(overrides)} if overrides else {}
    with pytest.raises(ConfigError) as refused:
        ScaffoldingConfig.load(parameters, environ=environ)
    assert refused.value.key == key


def test_an_override_variable_that_is_not_a_json_object_is_refused():
    for raw in ("{not json", "[1]"):
        with pytest.raises(ConfigError, match="SCAFFOLDING_CONFIG_OVERRIDES"):
            ScaffoldingConfig.load({}, environ={"SCAFFOLDING_CONFIG_OVERRIDES": raw})


def test_python_backend_keys_are_left_to_the_backend():
    loaded = ScaffoldingConfig.load({"EXECUTION_ENV_PATH": "/env.tar.gz"}, environ={})
    assert loaded == ScaffoldingConfig()


def test_model_configs_require_a_model_dir_and_check_their_values():
    with pytest.raises(ConfigError, match="model_dir"):
        GeneratorConfig.load({}, environ={})
    assert GeneratorConfig.load({"model_dir": "m"}, environ={}).max_tokens_cap == 1024
    with pytest.raises(ConfigError, match="device"):
        RewardConfig.load({"model_dir": "m", "device": "tpu"}, environ={})
    overrides = {"SCAFFOLDING_REWARD_OVERRIDES": json.dumps({"device": "cuda:1"})}
    assert RewardConfig.load({"model_dir": "m"}, environ=overrides).device == "cuda:1"
