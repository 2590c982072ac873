"""Which power figures an energy result rests on (docs/idle-power.md).

Energy needs a device's TDP (busy power is split from it, MODEL.md §8) and its idle power. The
catalog gives a sourced ``idle_W`` for some devices; the others fall back to the reference's
static share, 0.3 x ``tdp_W``, an *estimate* that every result says it used
(``idle_power_estimated`` = 1). A device with no TDP at all (Google publishes none for its TPUs;
a custom device that leaves ``tdp_W`` at 0) has no power figure: its energy is unknown, so the
energy variables are NaN, never 0 J, and a warning line names the device.
"""
from __future__ import annotations

import warnings

import numpy as np

ENERGY_VARS = ("energy_J", "energy_per_output_token_J")


def has_power_figure(device) -> bool:
    """True when energy can be computed for ``device``: it has a TDP (> 0 W)."""
    return device is not None and device.tdp_W > 0


def idle_power_estimated(device) -> bool:
    """True when the idle power of ``device`` is the 0.3 x TDP fallback, not a sourced reading."""
    return device is not None and device.idle_W is None


_warned: set[str] = set()   # device names already warned about in this process (a sweep repeats them)


def warn_no_power(device) -> None:
    """One warning line per device without a power figure, once per process."""
    if device.name in _warned:
        return
    _warned.add(device.name)
    warnings.warn(f"device {device.name!r} has no power figure (tdp_W = {device.tdp_W:g}): energy_J and "
                  f"energy_per_output_token_J are NaN; set device.tdp_W (and idle_W) to get energy "
                  f"(docs/idle-power.md)", stacklevel=3)


def estimated_flag(devices) -> float:
    """1.0 if any of ``devices`` (those drawing energy in one point) has an estimated idle power,
    else 0.0; NaN when one has no power figure (its energy is NaN anyway)."""
    devs = [d for d in devices if d is not None]
    if not all(has_power_figure(d) for d in devs):
        return np.nan
    return 1.0 if any(idle_power_estimated(d) for d in devs) else 0.0


def apply_to_points(s: dict, devices_per_point) -> None:
    """Single-client runner: per point, NaN energy where the device has no power figure and set
    ``idle_power_estimated``. ``devices_per_point`` is one list of devices per point."""
    flags = np.array([estimated_flag(devs) for devs in devices_per_point], dtype=float)
    unknown = np.isnan(flags)
    for devs in (d for d, u in zip(devices_per_point, unknown) if u):
        for d in devs:
            if d is not None and not has_power_figure(d):
                warn_no_power(d)
    for k in ENERGY_VARS:
        if k in s:
            s[k] = np.where(unknown, np.nan, s[k])
    s["idle_power_estimated"] = flags


def mask_client_energy(client_energy_J: np.ndarray, devices) -> None:
    """Multi-client run: NaN (in place) the energy of every client whose device has no power
    figure, so the run's summed energy is NaN too. ``devices``: one per client (None = no device)."""
    for c, d in enumerate(devices):
        if d is not None and not has_power_figure(d):
            warn_no_power(d)
            client_energy_J[c] = np.nan


def topology_devices(topo) -> list:
    """The device of each client of a multi-client topology (LLM engine or slot server; None
    for a server without a device)."""
    return [cl.device if cl is not None else (s.device if s is not None else None)
            for cl, s in zip(topo.llm, topo.server)]
