"""Sweep points built from validated sections (mistfast.sweep_points) against the full path.

The twin is ``parse_scenario`` on the point's whole document (``sweep.point_doc``): every point
must give the same ScenarioSpec (``==``), the same derived values, and for invalid points the very
same message. The sweeps below make points invalid in each way parse_scenario can refuse them:
a field value (tp = 3 of 32 heads), a cross-field check inside a client (chunk_size below
max_batch_size), several sections at once, a stage on the wrong kind of client (a check across
sections), a client that does not fit its device, and the memory limit.
"""
from __future__ import annotations

import pytest

import mistfast.sweep as S
from mistfast.limits import set_max_memory_GB
from mistfast.specs import SpecError, parse_scenario
from mistfast.sweep_points import PointBuilder

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100", "scheduler": {"batching": "chunked"}}


def _full(spec, values):
    """(scenario or None, reason, derived) through the whole document, as before the split."""
    try:
        doc, derived = S.point_doc(spec, values)
    except SpecError as e:
        return None, "; ".join(e.problems), {}
    try:
        return parse_scenario(doc, base={}), "", derived
    except SpecError as e:
        return None, "; ".join(e.problems), derived


def _check_every_point(spec, expect_invalid: int, expect_valid: int = 1):
    b = PointBuilder(spec).start_chunk()
    assert b.ok
    n_invalid = n_valid = 0
    for values in S.point_values(spec) * 2:   # twice: the second pass comes from the caches
        scen_full, why_full, derived_full = _full(spec, values)
        both = b.derived_values(values)
        assert both is not None and both[0] == derived_full
        scen, why = b.scenario(values, both[1])
        assert why == why_full, values
        assert scen == scen_full, values
        n_invalid += bool(why)
        n_valid += scen is not None
    assert n_invalid == 2 * expect_invalid and n_valid >= 2 * expect_valid


def test_single_client_points_equal_the_full_path_valid_or_not():
    spec = S.parse_sweep({"sweep": {"axes": {
        "clients[0].tp": [1, 3],                                  # 3 does not divide 32 heads
        "clients[0].scheduler.max_batch_size": [64, 1024],        # 1024 > chunk_size 512: invalid
        "clients[0].device": ["H100", "A100"],
        "workload.arrival.rate_rps": [1.0, 4.0]},
        "derived": {"clients[0].scheduler.chunk_size": "512 if tp == 1 else 2048",
                    "workload.num_requests": "20 if rate_rps < 2 else 0",   # 0 requests: invalid workload
                    "simulation.warmup_s": "0.0 if rate_rps < 2 else 5.0"}},
        "scenario": {"clients": [LLM]}})
    # valid: tp 1, max_batch_size 64, rate 1 (2 devices); every other point is invalid, some in two sections
    _check_every_point(spec, expect_invalid=16 - 2, expect_valid=2)


def test_a_client_that_does_not_fit_its_device_and_the_memory_limit():
    spec = S.parse_sweep({"sweep": {"axes": {"clients[0].model": ["llama-3.1-8b", "llama-3.1-405b"],
                                             "workload.num_requests": [10, 2000]}},
                          "scenario": {"clients": [LLM]}})
    set_max_memory_GB(0.001)   # 1 MB: 2,000 requests at ~1 kB each are over it
    try:
        _check_every_point(spec, expect_invalid=3)
    finally:
        set_max_memory_GB(None)


def test_pipeline_points_and_a_stage_on_the_wrong_kind_of_client():
    spec = S.parse_sweep({"sweep": {"axes": {"clients[1].device": ["H100", "A100"], "clients[0].tp": [1, 2]},
        # a derived quantity puts the embed stage on the retrieval server for the A100 points: invalid
        "derived": {"pipelines[0].stages[0].pool": "'embed' if device == 'H100' else 'retrieval'"}},
        "scenario": {
            "workload": {"num_requests": 10},
            "clients": [LLM, {"name": "embed", "model": "e5-base", "device": "H100"}],
            "servers": [{"name": "retrieval", "kind": "retrieval", "device": "Grace"}],
            "pipelines": [{"name": "rag", "stages": [
                {"kind": "embed", "pool": "embed"}, {"kind": "retrieve", "pool": "retrieval"},
                {"kind": "llm", "pool": "llm"}]}]}})
    _check_every_point(spec, expect_invalid=2, expect_valid=2)


@pytest.mark.parametrize("path", ["clients", "catalog.devices.X.memory_GiB"])
def test_sweeps_the_split_does_not_cover_take_the_full_path(path):
    spec = S.SweepSpec(base={"clients": [LLM]}, axes=(S.Axis("x", path, (1,)),))
    assert not PointBuilder(spec).ok


def test_a_sweep_gives_the_same_dataset_through_either_path(monkeypatch):
    """The whole chunk (invalid points, derived inputs, seeds) with the split and without it."""
    spec = S.parse_sweep({"sweep": {"seed": 4, "chunk_points": 5, "axes": {
        "clients[0].tp": [1, 2, 3], "workload.arrival.rate_rps": [2.0, 8.0]},
        "derived": {"clients[0].scheduler.max_batch_size": "64 * tp"}},
        "scenario": {"workload": {"num_requests": 25}, "clients": [LLM]}})
    fast = S.run_sweep(spec)
    import mistfast.sweep_points as SP
    monkeypatch.setattr(SP.PointBuilder, "scenario", lambda self, values, derived: (None, ""))
    SP._BUILDERS.clear()
    full = S.run_sweep(spec)
    SP._BUILDERS.clear()
    from tests.test_sweep import assert_bit_identical
    assert_bit_identical(fast, full)
    assert int((full.status != 0).sum()) == 2   # tp = 3 at both rates


# ----------------------------------------------------------------------------- reason codes
def test_reasons_are_codes_into_a_table_of_distinct_messages(tmp_path):
    import numpy as np
    import xarray as xr
    text = np.array([["", "tp = 3: no"], ["bad: x", "tp = 3: no"], ["", ""]], dtype=object)
    ds = xr.Dataset({"reason": (("a", "b"), text, {"long_name": "invalid-point reason"}),
                     "status": (("a", "b"), (text != "").astype(np.int8))})
    coded = S.encode_reasons(ds)
    # "" is code 0; the others in order of first appearance in C order
    assert coded.reason.values.tolist() == [[0, 1], [2, 1], [0, 0]] and coded.reason.dtype == np.int32
    assert coded.reason_message.values.tolist() == ["", "tp = 3: no", "bad: x"]
    assert ds.reason.dtype == object   # the argument is left as it was
    xr.testing.assert_identical(S.decode_reasons(coded), ds)
    S.write_netcdf(ds, tmp_path / "r.nc")
    raw = xr.load_dataset(tmp_path / "r.nc")
    assert raw.reason.dtype == np.int32 and raw.sizes["reason_code"] == 3
    lazy = S.open_sweep(tmp_path / "r.nc")
    try:
        assert not lazy.reason.variable._in_memory   # decoded when read, not when opened
        xr.testing.assert_identical(lazy.load(), ds)
    finally:
        lazy.close()
