"""Importers that turn another tool's timing data into step observations for calibration.

* :func:`load_vidur_profile` reads a Vidur per-operator profile folder (``attention.csv``,
  ``mlp.csv``, ``all_reduce.csv`` and optionally ``send_recv.csv``, the format of the
  ``data/profiling`` files of microsoft/vidur) and returns a :class:`VidurProfile`: the step time
  Vidur's execution-time model assigns to any batch shape, and :meth:`VidurProfile.observations`
  to sample it on a grid of batch shapes as :class:`~mistfast.calibration.StepObservation`
  (each carrying its attention share, so the correction can follow the context length).
* :func:`load_step_log` reads a per-step log (one row per engine step, from an engine's own
  logging or another simulator) with token counts and context sizes instead of explicit chunks.

Vidur's step time (vidur 0.0.26, ``execution_time.py`` and ``sklearn_execution_time_predictor.py``),
reproduced here from its published description, per batch, in ms::

    layers x ( pre_proj + post_proj + rope + up_proj + act + down_proj + input_norm + post_norm + add
               + 2 x (all_reduce + nccl_launch_ms)                     all at T rounded up to 8 tokens
               + attn_decode(B, mean context rounded up to 64) x (1 + 0.1 [B > 1])
               + attn_prefill(sum past, round(sqrt(sum chunk^2))^2) x (1 + 0.1 [more than one chunk]) )

Vidur fits a random forest to the profile medians; here the medians are interpolated (linearly in
tokens; bilinearly in (batch, context) for decode attention; in chunk² for prefill attention).
The CPU overheads are off, as in Vidur's default (``skip_cpu_overhead_modeling``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .calibration import CalibrationError, StepObservation, engine_family, precision_key, resolve_device, resolve_model

VIDUR_LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "attn_rope", "mlp_up_proj", "mlp_act", "mlp_down_proj",
                    "input_layernorm", "post_attention_layernorm", "add")
VIDUR_FILES = ("attention.csv", "mlp.csv", "all_reduce.csv")


def _median_col(df, op: str) -> np.ndarray:
    col = f"time_stats.{op}.median"
    if col not in df.columns:
        return np.zeros(len(df))
    return df[col].fillna(0.0).to_numpy(dtype=float)


def _interp_sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct x (ascending) with the mean y of repeats."""
    xs, inv = np.unique(x, return_inverse=True)
    ys = np.bincount(inv, weights=y) / np.bincount(inv)
    return xs, ys


@dataclass
class VidurProfile:
    """Vidur's execution-time model of one (model, device, TP) from its per-operator profile.

    Times are per layer in ms in the tables; :meth:`step_time_s` returns the whole step in s."""
    model: str
    device: str
    tp: int
    num_layers: int
    hidden_size: int
    linear: dict = field(default_factory=dict)        # op -> (tokens, ms)
    all_reduce: tuple = (np.zeros(0), np.zeros(0))    # (tokens, ms)
    decode_batch: np.ndarray = field(default_factory=lambda: np.zeros(0))
    decode_kv: np.ndarray = field(default_factory=lambda: np.zeros(0))
    decode_ms: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # [batch, kv]
    prefill_kv: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prefill_tables: list = field(default_factory=list)  # per prefill_kv: (chunk², ms)
    precision: str = "fp16"
    engine: str = "vidur"
    source: str = ""
    kv_granularity: int = 64
    decode_batching_overhead: float = 0.1
    prefill_batching_overhead: float = 0.1
    nccl_launch_ms: float = 0.02

    # ---- the pieces of Vidur's formula --------------------------------------------------------------
    def linear_ms(self, tokens: int) -> float:
        """Per-layer time of every token-count op (GEMMs, norms, rope, add, two AllReduces)."""
        tr = float((int(tokens) + 7) // 8 * 8)
        t = sum(float(np.interp(tr, *self.linear[op])) for op in VIDUR_LINEAR_OPS if op in self.linear)
        if self.tp > 1 and len(self.all_reduce[0]):
            t += 2.0 * (float(np.interp(tr, *self.all_reduce)) + self.nccl_launch_ms)
        return t

    def decode_attention_ms(self, contexts: Sequence[float]) -> float:
        """Per-layer decode attention of a batch whose requests hold ``contexts`` KV tokens."""
        b = len(contexts)
        if b == 0:
            return 0.0
        g = self.kv_granularity
        kv = (int(np.mean(contexts)) + g - 1) // g * g
        # bilinear in (batch, context) between profiled points, clamped at the ends
        per_b = np.array([np.interp(kv, self.decode_kv, row) for row in self.decode_ms])
        t = float(np.interp(b, self.decode_batch, per_b))
        return t * (1.0 + self.decode_batching_overhead * (b > 1))

    def prefill_attention_ms(self, chunks: Sequence[tuple[float, float]]) -> float:
        """Per-layer prefill attention of chunks ``(past, new)``."""
        if not chunks:
            return 0.0
        g = self.kv_granularity
        kv = float(sum((int(p) + g - 1) // g * g for p, _ in chunks))
        c2 = float(round(math.sqrt(sum(float(n) ** 2 for _, n in chunks))) ** 2)
        vals = np.array([np.interp(c2, x, y) for x, y in self.prefill_tables])
        t = float(np.interp(kv, self.prefill_kv, vals))
        return t * (1.0 + self.prefill_batching_overhead * (len(chunks) > 1))

    def step_parts_s(self, prefill=(), decode=()) -> tuple[float, float]:
        """(non-attention s, attention s) of one step. ``prefill``: (past, new) chunks; ``decode``:
        (branches, context) entries (context = KV tokens before this token)."""
        T = sum(int(n) for _, n in prefill) + sum(int(w) for w, _ in decode)
        if T <= 0:
            return 0.0, 0.0
        ctx = [float(k) + 1.0 for w, k in decode for _ in range(int(w))]  # Vidur: tokens processed so far
        attn = self.decode_attention_ms(ctx) + self.prefill_attention_ms(prefill)
        return self.num_layers * self.linear_ms(T) * 1e-3, self.num_layers * attn * 1e-3

    def step_time_s(self, prefill=(), decode=()) -> float:
        a, b = self.step_parts_s(prefill, decode)
        return a + b

    # ---- sampling --------------------------------------------------------------------------------------
    def observations(self, *, prefill_chunks: Sequence[int] | None = None, decode_batches: Sequence[int] | None = None,
                     decode_contexts: Sequence[int] | None = None, group: str = "") -> list[StepObservation]:
        """Step observations on a grid: single prompts of ``prefill_chunks`` tokens (no past) and
        decode batches of ``decode_batches`` requests at ``decode_contexts`` tokens of context."""
        max_chunk = int(max(x.max() for x, _ in self.prefill_tables) ** 0.5) if self.prefill_tables else 4096
        # default grid: every profiled token count (the GEMM profile has tile steps between them)
        # and every profiled decode batch size
        profiled = self.linear[VIDUR_LINEAR_OPS[0]][0] if self.linear else np.arange(1, max_chunk + 1)
        chunks = prefill_chunks or sorted({int(t) for t in profiled if 1 <= t <= max_chunk})
        batches = decode_batches or sorted({int(b) for b in self.decode_batch if b >= 1})
        kmax = int(self.decode_kv.max()) if len(self.decode_kv) else 4096
        contexts = decode_contexts or [c for c in (128, 512, 1024, 2048, 3072, 4032) if c <= kmax] or [kmax]
        out: list[StepObservation] = []
        kw = dict(model=self.model, device=self.device, tp=self.tp, precision=self.precision, engine=self.engine,
                  group=group or f"vidur|{self.model}|{self.device}|tp{self.tp}", source=self.source)
        for c in chunks:
            pf = ((0, int(c)),)
            na, at = self.step_parts_s(prefill=pf)
            out.append(StepObservation(time_s=na + at, attention_s=at, prefill=pf, id=f"vidur-prefill-{c}", **kw))
        for b in batches:
            for k in contexts:
                dec = ((1, int(k)),) * int(b)
                na, at = self.step_parts_s(decode=dec)
                out.append(StepObservation(time_s=na + at, attention_s=at, decode=dec, id=f"vidur-decode-{b}x{k}", **kw))
        return out


def load_vidur_profile(folder: str | Path, *, model: str, device: str, tp: int, precision: str = "fp16",
                       block_size: int = 16, engine: str = "vidur", kv_granularity: int = 64) -> VidurProfile:
    """Read a Vidur profile folder for ``model`` on ``device`` at tensor parallelism ``tp``.

    Rows are filtered as Vidur does (``num_tensor_parallel_workers == tp``, the model's head counts
    and width, ``block_size``; AllReduce rows with ``num_workers == devices_per_node == tp``)."""
    import pandas as pd

    from .catalog import default_catalog
    d = Path(folder)
    missing = [f for f in VIDUR_FILES if not (d / f).exists()]
    if missing:
        raise CalibrationError(f"vidur profile {d}: missing {', '.join(missing)} (needs {', '.join(VIDUR_FILES)})")
    m_name = resolve_model(model)
    dev = resolve_device(device)
    if m_name is None:
        raise CalibrationError(f"vidur profile: model {model!r} is not in the model catalog")
    if dev is None:
        raise CalibrationError(f"vidur profile: device {device!r} is not in the device catalog")
    m = default_catalog().get("models", m_name)
    D, H, Hkv = int(m["hidden_size"]), int(m["num_heads"]), int(m.get("num_kv_heads", m["num_heads"]))

    mlp = pd.read_csv(d / "mlp.csv").drop_duplicates()
    sel = mlp["num_tensor_parallel_workers"] == tp
    for col, val in (("n_embd", D), ("n_head", H), ("n_kv_head", Hkv)):
        if col in mlp.columns:
            sel &= mlp[col] == val
    mlp = mlp[sel]
    if mlp.empty:
        raise CalibrationError(f"vidur profile {d / 'mlp.csv'}: no rows for tp = {tp}, n_embd = {D}, heads {H}/{Hkv}")
    tok = mlp["num_tokens"].to_numpy(dtype=float)
    linear = {op: _interp_sorted(tok, _median_col(mlp, op)) for op in VIDUR_LINEAR_OPS}

    ar = pd.read_csv(d / "all_reduce.csv").drop_duplicates()
    ar = ar[(ar["num_workers"] == tp) & (ar["devices_per_node"] == tp) & (ar["collective"] == "all_reduce")]
    if tp > 1 and ar.empty:
        raise CalibrationError(f"vidur profile {d / 'all_reduce.csv'}: no all_reduce rows for {tp} workers on one node")
    all_reduce = _interp_sorted(ar["size"].to_numpy(dtype=float) / D / 2.0, _median_col(ar, "all_reduce"))

    att = pd.read_csv(d / "attention.csv").drop_duplicates()
    sel = att["num_tensor_parallel_workers"] == tp
    for col, val in (("n_embd", D), ("n_q_head", H), ("n_kv_head", Hkv), ("block_size", block_size)):
        if col in att.columns:
            sel &= att[col] == val
    att = att[sel]
    dec = att[att["prefill_chunk_size"] == 0]
    pf = att[att["prefill_chunk_size"] > 0]
    if dec.empty or pf.empty:
        raise CalibrationError(f"vidur profile {d / 'attention.csv'}: needs decode and prefill rows for tp = {tp}, "
                               f"block_size = {block_size}")
    piv = dec.pivot_table(index="batch_size", columns="kv_cache_size", values="time_stats.attn_decode.median",
                          aggfunc="mean")
    piv = piv.interpolate(axis=1, limit_direction="both").interpolate(axis=0, limit_direction="both")
    tables = []
    pkv = np.array(sorted(pf["kv_cache_size"].unique()), dtype=float)
    for kv in pkv:
        g = pf[pf["kv_cache_size"] == kv]
        tables.append(_interp_sorted(g["prefill_chunk_size"].to_numpy(dtype=float) ** 2,
                                     _median_col(g, "attn_prefill")))
    return VidurProfile(model=m_name, device=dev, tp=int(tp), num_layers=int(m["num_layers"]), hidden_size=D,
                        linear=linear, all_reduce=all_reduce, decode_batch=piv.index.to_numpy(dtype=float),
                        decode_kv=piv.columns.to_numpy(dtype=float), decode_ms=piv.to_numpy(dtype=float),
                        prefill_kv=pkv, prefill_tables=tables, precision=precision_key(precision),
                        engine=engine_family(engine), source=str(d), kv_granularity=int(kv_granularity))


# ============================================================================ per-step logs
STEP_LOG_TIME_COLUMNS = {"time_ms": 1e-3, "duration_ms": 1e-3, "batch_time_ms": 1e-3, "time_s": 1.0,
                         "duration_s": 1.0, "batch_execution_time": 1.0, "execution_time_s": 1.0}


def load_step_log(path: str | Path, *, model: str, device: str, tp: int = 1, pp: int = 1, precision: str = "bf16",
                  engine: str = "", min_count: int = 1) -> tuple[list[StepObservation], list[tuple[int, str]]]:
    """Step observations from a per-step log: one CSV row per engine step with

    * a duration: ``time_ms`` / ``duration_ms`` / ``batch_time_ms`` (ms) or ``time_s`` /
      ``duration_s`` / ``batch_execution_time`` / ``execution_time_s`` (s);
    * ``num_prefill_tokens`` (new prompt tokens in the step) and ``num_prefills`` (chunks; default 1
      when there are prefill tokens), optional ``prefill_past_tokens`` (cached tokens before the
      chunks, summed);
    * ``num_decodes`` (decode rows) and ``decode_context_tokens`` (their mean context) or
      ``decode_context_sum`` (summed).

    Chunks are taken as equal (the log has sums only). Returns (observations, skipped rows with
    the reason); a row that cannot be read is skipped with its line number, never silently."""
    import pandas as pd
    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"step log {p}: file not found")
    df = pd.read_csv(p)
    tcol = next((c for c in STEP_LOG_TIME_COLUMNS if c in df.columns), None)
    if tcol is None:
        raise CalibrationError(f"step log {p}: needs a duration column, one of {', '.join(STEP_LOG_TIME_COLUMNS)}")
    m_name, dev = resolve_model(model), resolve_device(device)
    if m_name is None or dev is None:
        raise CalibrationError(f"step log {p}: unknown model {model!r} or device {device!r}")
    obs, skipped = [], []
    kw = dict(model=m_name, device=dev, tp=int(tp), pp=int(pp), precision=precision_key(precision),
              engine=engine_family(engine), source=str(p), group=f"steplog|{p.name}")

    def num(r, c, default=0.0):
        v = r.get(c, default)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return float("nan")
        return default if math.isnan(v) and c not in r else v

    for i, r in enumerate(df.to_dict("records")):
        line = i + 2
        t = num(r, tcol, float("nan")) * STEP_LOG_TIME_COLUMNS[tcol]
        n_pf_tok = num(r, "num_prefill_tokens")
        n_pf = num(r, "num_prefills", 1.0 if n_pf_tok > 0 else 0.0)
        past = num(r, "prefill_past_tokens")
        n_dec = num(r, "num_decodes")
        if "decode_context_sum" in r and n_dec > 0:
            ctx = num(r, "decode_context_sum") / n_dec
        else:
            ctx = num(r, "decode_context_tokens")
        vals = (t, n_pf_tok, n_pf, past, n_dec, ctx)
        if any(not math.isfinite(v) for v in vals) or min(vals) < 0:
            skipped.append((line, f"line {line}: a value is missing, not a number or negative: "
                                  f"{tcol}={r.get(tcol)!r}, num_prefill_tokens={r.get('num_prefill_tokens')!r}, "
                                  f"num_decodes={r.get('num_decodes')!r}"))
            continue
        if t <= 0 or (n_pf_tok <= 0 and n_dec <= 0):
            skipped.append((line, f"line {line}: empty step or non-positive duration"))
            continue
        k = max(int(round(n_pf)), 1) if n_pf_tok > 0 else 0
        prefill = tuple((int(round(past / k)), max(1, int(round(n_pf_tok / k)))) for _ in range(k))
        decode = ((1, max(0, int(round(ctx)))),) * int(round(n_dec))
        obs.append(StepObservation(time_s=t, prefill=prefill, decode=decode, id=f"{p.stem}:{line}", **kw))
    return obs, skipped
