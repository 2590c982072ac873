"""Power figures behind energy results (docs/idle-power.md): every catalog device has a TDP or
gives NaN energy with a warning; a fallback idle power is flagged in the Dataset."""
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

import mistfast as mf

DEVICES_TOML = Path(__file__).resolve().parents[1] / "data" / "devices.toml"
CATALOG = tomllib.loads(DEVICES_TOML.read_text())
REAL = sorted(name for name in CATALOG if not name.endswith("-genz"))
# Google publishes no per-chip TDP: these devices have no power figure at all (docs/idle-power.md)
NO_TDP = {"TPU-v5e", "TPU-v5p", "TPU-v6e", "TPU-v7"}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    # the no-power warning is given once per device and process; each test starts afresh
    import mistfast.power
    monkeypatch.setattr(mistfast.power, "_warned", set())


def busy_run(device, log_steps=0, **client):
    # 20 requests of 512 + 32 tokens, offered back to back: the device is busy most of the run
    doc = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": device, "precision": "fp8", **client}],
           "workload": {"num_requests": 20, "arrival": {"process": "offline"},
                        "input": {"dist": "fixed", "value": 512}, "output": {"dist": "fixed", "value": 32}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = mf.simulate(doc, log_steps=log_steps)
    return ds, [str(w.message) for w in caught]


def test_every_catalog_device_has_a_tdp_or_is_listed_without_one():
    for name in REAL:
        d = CATALOG[name]
        if name in NO_TDP:
            assert "tdp_W" not in d, f"{name} now has a TDP: remove it from NO_TDP and the docs list"
        else:
            assert d.get("tdp_W", 0.0) > 0, name
            # a sourced idle power never exceeds the TDP it idles below
            assert d.get("idle_W", 0.0) < d["tdp_W"], name


@pytest.mark.parametrize("name", [n for n in REAL if n not in NO_TDP])
def test_busy_run_has_positive_energy_on_every_device(name):
    ds, msgs = busy_run(name)
    assert int(ds.n_finished) == 20
    e = float(ds.energy_J)
    assert np.isfinite(e) and e > 0
    # per device, power lies between min(idle, static share 0.3 x TDP) and the TDP (MODEL.md §8),
    # so the energy over the run lies between those powers x the run's length
    ds_log, _ = busy_run(name, log_steps=10000)
    end = float(ds_log.step_start_s[-1] + ds_log.step_duration_s[-1])
    dev = CATALOG[name]
    low = min(dev.get("idle_W", 0.3 * dev["tdp_W"]), 0.3 * dev["tdp_W"])
    assert low * end * 0.9999 <= e <= dev["tdp_W"] * end * 1.0001
    flag = float(ds.idle_power_estimated)
    assert flag == (0.0 if "idle_W" in CATALOG[name] else 1.0)
    assert not any("no power figure" in m for m in msgs)


@pytest.mark.parametrize("name", sorted(NO_TDP))
def test_device_without_tdp_gives_nan_energy_and_a_warning(name):
    ds, msgs = busy_run(name)
    assert int(ds.n_finished) == 20  # the run itself is unaffected
    assert np.isnan(float(ds.energy_J)) and np.isnan(float(ds.energy_per_output_token_J))
    assert np.isnan(float(ds.idle_power_estimated))
    hits = [m for m in msgs if "no power figure" in m]
    assert hits and name in hits[0] and "tdp_W" in hits[0]


def test_custom_device_without_tdp_is_nan_not_zero():
    dev = {"kind": "gpu", "memory_GiB": 80, "memory_bandwidth_GBps": 3350, "tflops": {"bf16": 989.4}}
    ds, msgs = busy_run(dev)
    assert np.isnan(float(ds.energy_J))
    assert any("no power figure" in m for m in msgs)
    # giving it a TDP gives energy, and flags the 0.3 x TDP idle power as estimated
    ds2, _ = busy_run({**dev, "tdp_W": 700.0})
    assert float(ds2.energy_J) > 0 and float(ds2.idle_power_estimated) == 1.0
    ds3, _ = busy_run({**dev, "tdp_W": 700.0, "idle_W": 80.0})
    assert float(ds3.idle_power_estimated) == 0.0


def test_estimated_idle_power_is_three_tenths_of_tdp_by_hand():
    # a device without a sourced idle reading (a custom one with a 700 W TDP): two requests 100 s
    # apart idle at 0.3 x 700 W = 210 W. Setting idle_W = 0 removes exactly devices x 210 W x idle time.
    dev = {"kind": "gpu", "memory_GiB": 80, "memory_bandwidth_GBps": 3350, "tflops": {"bf16": 989.4, "fp8": 1978.9},
           "tdp_W": 700.0}
    doc = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": dev, "precision": "fp8"}],
           "workload": {"num_requests": 2, "arrival": {"process": "uniform", "rate_rps": 0.01},
                        "input": {"dist": "fixed", "value": 1000}, "output": {"dist": "fixed", "value": 2}}}
    ds = mf.simulate(doc, log_steps=100)
    busy = float(ds.step_duration_s.sum())
    end = float(ds.step_start_s[-1] + ds.step_duration_s[-1])
    zero = mf.simulate({**doc, "clients": [{**doc["clients"][0], "device": {**dev, "idle_W": 0.0}}]})
    assert end - busy > 90.0
    assert float(ds.energy_J) - float(zero.energy_J) == pytest.approx(210.0 * (end - busy), rel=1e-9)
    assert float(ds.idle_power_estimated) == 1.0 and float(zero.idle_power_estimated) == 0.0


def test_pipeline_client_without_tdp_makes_only_its_energy_nan():
    # prefill on H100 (sourced), decode on TPU v6e (no TDP): the decode client's energy and the
    # run's total are NaN; the prefill client's stays a number
    doc = {"clients": [{"name": "p", "model": "llama-3.1-8b", "device": "H100", "precision": "fp8"},
                       {"name": "d", "model": "llama-3.1-8b", "device": "TPU-v6e", "precision": "fp8"}],
           "links": [{"between": ["p", "d"], "link": "RDMA-400G"}],
           "pipelines": [{"stages": [{"kind": "prefill", "pool": "p"}, {"kind": "decode", "pool": "d"}]}],
           "workload": {"num_requests": 10, "arrival": {"process": "offline"},
                        "input": {"dist": "fixed", "value": 256}, "output": {"dist": "fixed", "value": 16}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = mf.simulate(doc)
    ce = ds.client_energy_J.values
    names = list(ds.client.values)
    assert np.isfinite(ce[names.index("p")]) and ce[names.index("p")] > 0
    assert np.isnan(ce[names.index("d")])
    assert np.isnan(float(ds.energy_J)) and np.isnan(float(ds.idle_power_estimated))
    assert any("TPU-v6e" in str(w.message) and "no power figure" in str(w.message) for w in caught)


def test_sweep_flags_each_point():
    # a sweep over devices: the flag and the NaN energy are per point, the other points untouched
    from mistfast.sweep import parse_sweep, run_sweep
    doc = {"sweep": {"name": "power", "axis": [{"name": "device", "path": "clients[0].device",
                                                "values": ["H100", "Grace", "TPU-v6e"]}]},
           "scenario": {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "precision": "bf16"}],
                        "workload": {"num_requests": 10, "arrival": {"process": "offline"},
                                     "input": {"dist": "fixed", "value": 256},
                                     "output": {"dist": "fixed", "value": 16}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = run_sweep(parse_sweep(doc, name="power"))
    flag = ds.idle_power_estimated.values
    assert flag[0] == 0.0 and flag[1] == 1.0 and np.isnan(flag[2])
    e = ds.energy_J.values
    assert e[0] > 0 and e[1] > 0 and np.isnan(e[2])
    assert (ds.n_finished.values == 10).all()


@pytest.mark.parametrize("name,idle_W", [("L40S", 82.5), ("GH200", 169.8), ("Gaudi2", 85.7), ("Gaudi3", 227.8), ("B300", 135.0)])
def test_sourced_idle_power_by_hand(name, idle_W):
    # idle_W from the readings cited in data/devices.toml (docs/idle-power.md): L40S 83 and 82 W,
    # GH200 module 169.77 W, Gaudi 2 mean of 81/83/91/82/85/92 W, Gaudi 3 mean of 225-231 W,
    # B300 135 W.
    # Two requests 100 s apart: the energy drops by exactly idle_W x idle time when idle_W = 0.
    doc = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": name}],
           "workload": {"num_requests": 2, "arrival": {"process": "uniform", "rate_rps": 0.01},
                        "input": {"dist": "fixed", "value": 1000}, "output": {"dist": "fixed", "value": 2}}}
    ds = mf.simulate(doc, log_steps=100)
    busy = float(ds.step_duration_s.sum())
    end = float(ds.step_start_s[-1] + ds.step_duration_s[-1])
    zero = mf.simulate({**doc, "clients": [{**doc["clients"][0], "device": {"preset": name, "idle_W": 0.0}}]})
    assert end - busy > 90.0
    assert float(ds.energy_J) - float(zero.energy_J) == pytest.approx(idle_W * (end - busy), rel=1e-9)
    assert float(ds.idle_power_estimated) == 0.0
