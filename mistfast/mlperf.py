"""How an MLPerf Inference (LoadGen) measurement row is run, from the submitter's own harness settings.

The MLPerf rows of ``data/measurements/public.csv`` name their harness config in the notes
(``parallelism from <path>;``) and carry the settings of that file that shape the step sequence
(``harness settings from that config: use_graphs False, enable_chunked_context True;`` — written
by ``tools/mlperf_harness_settings.py`` from mlcommons/inference_results_v5.1). This module turns
them into the simulated engine (docs/calibration.md, "MLPerf harnesses"):

* **Per-step harness time.** The TensorRT-LLM and vLLM harnesses of v5.1 spend a time per engine
  step that the roofline step model has no term for and that the throughput rows cannot show
  apart from the efficiencies: at the state each Server/Interactive run measured (running
  requests = rate x (E2E - TTFT) per replica, Little's law; one step = the measured TPOT), the
  calibrated step is short by a time that does not change with the batch (llama2-70b on B200:
  14-15 ms at 240 and at 1,500 running requests) and grows with the layer count (llama3.1-8b
  ~4 ms, llama2-70b 14-17 ms, llama3.1-405b 18-28 ms). It is modelled as
  :data:`HARNESS_STEP_US_PER_LAYER` per layer per step (``client.harness_step_ms``). It is
  measured and documented but **not applied** by ``validate``: it was read off the MLPerf rows
  with a calibration fitted on them, and leaving the MLPerf source out, efficiencies fitted on
  serving engines (which absorb their own per-step host time) plus this time made the held-out
  MLPerf rows 14-25 % too slow and their Server latencies several times too long.
* **LoadGen timing.** LoadGen timestamps the first token and the completion inside the harness
  process (``FirstTokenComplete`` / ``QuerySamplesComplete``): there is no HTTP client, so the
  client-side TTFT overhead a calibration fits on benchmark-client rows does not apply.
* **Prefill scheduling.** ``enable_chunked_prefill False`` (vLLM V0, AMD harness_llm): whole
  prompts in prefill-only steps (``batching = "continuous"``); ``enable_chunked_context False``
  (TensorRT-LLM): whole prompts batched with the decodes (``"mixed"``).
* **Multi-step scheduling.** ``num_scheduler_steps N`` (vLLM V0): new requests join only between
  groups of N decode steps (:func:`mistfast.validate.multistep_admission_wait_ms`).
* **Launch-time floor**: NVIDIA's TensorRT-LLM harness steps last at least
  ``launch_time.kernels_per_step`` x ``launch_time.EAGER_KERNEL_US``; every step with ``use_graphs False``
  (TensorRT engines enqueued kernel by kernel), the steps with prefill rows with ``use_graphs True``
  (docs/ttft-under-load.md, "MLPerf TTFT, session 11"). **On when predicting**
  (``validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT``, session 12: the fit's training runs stay without it);
  in the fit's training runs too (``validate.MLPERF_LAUNCH_FLOOR_IN_VALIDATE``): measured, off.
* **Dispatch to replicas** (:func:`replica_arrival_cv`, measured, off in ``validate``: see
  ``validate.MLPERF_DISPATCH_IN_VALIDATE``). Neither harness splits LoadGen's Poisson stream at
  random: NVIDIA's ``llmlib`` sends each query to the next core in turn (``round_robin``) in
  Interactive and Offline and to the core with the fewest pending samples (``load_balancing``)
  in Server; AMD's ``harness_llm`` to the replica with the fewest in flight plus a token term
  (``shortest_queue_with_tokens``, every v5.1 YAML).
"""
from __future__ import annotations

import re

# Per-step harness time per transformer layer (us). Fitted, not derived: over the 102 dense-model
# (llama2-70b, llama3.1-405b, llama3.1-8b) Server/Interactive runs of v5.1 with harness settings,
# the median of (measured TPOT - calibrated step at the measured state) / layers is 182 us (per
# benchmark: 193, 158, 128 us; leaving one benchmark out: 148, 184, 190 us). A simulated run
# settles at a larger batch when its steps get longer, so the value that reproduces the measured
# TPOT is lower: 150 us puts the llama2-70b B200 Interactive run (Dell XE9680L, 220 qps) at
# TPOT 30.7 ms / TTFT 57.5 ms / E2E 9.0 s against 32.3 ms / 57.6 ms / 8.9 s measured.
HARNESS_STEP_US_PER_LAYER = 150.0

_LOADGEN_WORKLOAD = re.compile(r"^\s*MLPerf Inference v\d", re.IGNORECASE)
_SETTINGS = re.compile(r"harness settings from that config:([^;]*)")


def is_loadgen_row(workload: str) -> bool:
    """True for a row measured by MLPerf LoadGen (its workload text starts "MLPerf Inference vN")."""
    return bool(_LOADGEN_WORKLOAD.match(workload or ""))


def harness_settings(notes: str) -> dict[str, bool | int]:
    """The ``harness settings from that config: key value, ...`` segment of a row's notes as a dict
    (True/False -> bool, digits -> int); {} when the notes have none."""
    m = _SETTINGS.search(notes or "")
    if not m:
        return {}
    out: dict[str, bool | int] = {}
    for item in m.group(1).split(","):
        parts = item.split()
        if len(parts) != 2:
            continue
        key, value = parts
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        elif value.isdigit():
            out[key] = int(value)
    return out


def harness_batching(settings: dict) -> str | None:
    """Scheduler ``batching`` the harness settings imply, None to keep the engine default (chunked)."""
    if settings.get("enable_chunked_prefill") is False:
        return "continuous"   # vLLM V0 without chunked prefill: prefill-only steps of whole prompts
    if settings.get("enable_chunked_context") is False:
        return "mixed"        # TensorRT-LLM IFB without chunked context: whole prompts next to the decodes
    return None


def replica_arrival_cv(dp: int) -> float:
    """Coefficient of variation of the gaps between the queries one of ``dp`` replicas receives
    when the harness deals LoadGen's Poisson stream out in turn: every dp-th gap of a Poisson
    process summed, i.e. Erlang-dp gaps (gamma, shape dp), cv = 1/sqrt(dp); 1.0 (Poisson) for
    one replica. Round robin is exact for NVIDIA's Interactive and Offline dispatch
    (github:mlcommons/inference_results_v5.1@965182b0 closed/NVIDIA/code/llmlib/config.py
    ``HarnessConfig.__post_init__``, factory.py ``_create_scheduler``; no v5.1 config overrides
    ``traffic_distribution_policy``). Join-the-shortest-queue (NVIDIA Server ``load_balancing``,
    AMD ``shortest_queue_with_tokens``) evens the replicas out further still, so for those it is
    the smoothing's lower bound."""
    if dp < 1:
        raise ValueError(f"dp = {dp}: allowed: an integer >= 1")
    return 1.0 / float(dp) ** 0.5


def harness_step_ms(num_layers: int) -> float:
    """Per-step harness time (ms) of a model with ``num_layers`` transformer layers."""
    return num_layers * HARNESS_STEP_US_PER_LAYER / 1000.0
