"""The node-kind contract, checked for every registered kind (Vector's component spec)."""

from __future__ import annotations

import dataclasses
import importlib

import jsonschema
import pytest

from alphapulse.kinds import (
    Role,
    build_params,
    builtin_modules,
    kinds_in_module,
    load_kinds,
    params_to_plain,
)
from alphapulse.topology import default_schema_dir, stale_schema_files
from alphapulse.topology._schema import topology_validator

KINDS = load_kinds()
SPECS = list(KINDS.values())
IDS = list(KINDS)


def test_expected_kinds_are_registered():
    assert set(KINDS) >= {
        "source.simulated", "source.coinbase", "source.kraken", "source.binance",
        "source.alpaca", "source.evm_logs", "source.replay", "source.counter",
        "transform.book_delta", "transform.dex_classify", "transform.arbitrage", "relay",
        "sink.websocket", "sink.parquet", "sink.recorder", "sink.counter",
    }


@pytest.mark.parametrize("module", builtin_modules())
def test_each_module_registers_exactly_one_kind(module):
    importlib.import_module(module)
    assert len(kinds_in_module(module)) == 1, module


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_example_validates_against_the_kind_schema(spec):
    schema = spec.params_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(dict(spec.example))
    params = build_params(spec.params_type, spec.example)
    assert isinstance(params_to_plain(params), dict)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_example_validates_inside_a_topology(spec):
    node = {"kind": spec.name, "params": dict(spec.example)}
    if spec.role is Role.RELAY:
        node["domain"] = "market_data"
    errors = list(topology_validator().iter_errors({"topology": "t", "nodes": {"n": node}}))
    assert errors == []


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_field_has_a_description(spec):
    schema = spec.params_schema()
    assert spec.summary
    for field in dataclasses.fields(spec.params_type):
        description = schema["properties"][field.name].get("description", "")
        assert len(description) > 10, f"{spec.name}.{field.name}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_defaults_validate(spec):
    required = spec.params_schema().get("required", [])
    values = {name: "${X}" for name in required}
    params = params_to_plain(build_params(spec.params_type, values))
    jsonschema.Draft202012Validator(spec.params_schema()).validate(params)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_ports_fit_the_role(spec):
    if spec.role in (Role.SOURCE, Role.TRANSFORM):
        assert spec.emits
    if spec.role is Role.SINK:
        assert not spec.emits
    if spec.role is Role.RELAY:
        assert spec.emits is None


def test_secret_params_are_strings_without_literal_defaults():
    for spec in SPECS:
        schema = spec.params_schema()
        for name, prop in schema["properties"].items():
            if prop.get("x-secret"):
                assert prop["type"] == "string", f"{spec.name}.{name}"
                assert prop.get("default", "") == "", f"{spec.name}.{name}"


def test_generated_schemas_are_up_to_date():
    stale = stale_schema_files(default_schema_dir())
    assert stale == [], "run `alphapulse schema --write` and commit schemas/"
