"""Re-costing many measured or logged steps at trial efficiencies, the inner loop of every
efficiency fit (one numba pass over a CSR table of steps)."""
from __future__ import annotations


import numpy as np

from ._numba import jit
from .kernels import steptime as K
from .specs import ClientSpec
from .stepmodel import client_params, dense_eta_applies, dense_fp8_applies, expert_eta_applies, expert_fp8_applies


# ============================================================================ fast re-costing
# A "step set" is a CSR description of many steps, each with its own parameter-vector row and a
# weight; efficiencies are changed by rescaling the rate entries of the parameter vectors.
@jit
def _cost_steps(prm, row, pf_off, pf_past, pf_new, pf_done, dec_off, dec_w, dec_s, dec_k, out_t):
    nb = np.zeros(K.N_OUT)
    for i in range(out_t.shape[0]):
        a, b = pf_off[i], pf_off[i + 1]
        c, d = dec_off[i], dec_off[i + 1]
        out_t[i] = K.step_time(prm[row[i]], pf_past[a:b], pf_new[a:b], b - a, pf_done[i],
                               dec_w[c:d], dec_s[c:d], dec_k[c:d], d - c, nb)


class StepSet:
    """Steps to re-cost under trial efficiencies. ``add(client, prefill, decode, weight, owner)``."""

    def __init__(self):
        self._clients: dict[int, int] = {}
        self.client_list: list[ClientSpec] = []
        self.rows: list[int] = []
        self.pf: list[list[tuple[float, float]]] = []
        self.dec: list[list[tuple[float, float]]] = []
        self.done: list[float] = []
        self.weight: list[float] = []
        self.owner: list[int] = []
        self._built = False

    def add(self, client: ClientSpec, prefill, decode, weight: float = 1.0, owner: int = 0, done=None):
        key = id(client)
        if key not in self._clients:
            self._clients[key] = len(self.client_list)
            self.client_list.append(client)
        self.rows.append(self._clients[key])
        self.pf.append([(float(p), float(n)) for p, n in prefill])
        self.dec.append([(float(w), float(k)) for w, k in decode])
        self.done.append(float(len(self.pf[-1]) if done is None else done))
        self.weight.append(float(weight))
        self.owner.append(int(owner))
        self._built = False

    def __len__(self):
        return len(self.rows)

    def build(self):
        n = len(self.rows)
        self.pf_off = np.zeros(n + 1, np.int64)
        self.dec_off = np.zeros(n + 1, np.int64)
        for i in range(n):
            self.pf_off[i + 1] = self.pf_off[i] + len(self.pf[i])
            self.dec_off[i + 1] = self.dec_off[i] + len(self.dec[i])
        pf = np.array([x for l in self.pf for x in l], dtype=np.float64).reshape(-1, 2)
        dec = np.array([x for l in self.dec for x in l], dtype=np.float64).reshape(-1, 2)
        self.pf_past, self.pf_new = pf[:, 0].copy(), pf[:, 1].copy()
        self.dec_w, self.dec_k = dec[:, 0].copy(), dec[:, 1].copy()
        self.dec_s = np.zeros(len(dec))
        self.pf_done = np.asarray(self.done, dtype=np.float64)
        self.row = np.asarray(self.rows, dtype=np.int64)
        self.w = np.asarray(self.weight)
        self.own = np.asarray(self.owner, dtype=np.int64)
        # raw (efficiency-free) rate entries of each client's parameter vector
        P = len(self.client_list)
        self.prm0 = np.zeros((P, K.N_PARAMS))
        self.raw = np.zeros((P, 9))
        self.harness_s = np.zeros(P)
        # each client's own η_e (GenZ compat has no expert peak of its own: P_FPEAK_EXPERT = P_FPEAK, no η_e)
        self.e_on = np.array([expert_eta_applies(c) for c in self.client_list], dtype=bool)
        self.eta_e = np.array([c.efficiency.expert_compute if on else 1.0 for c, on in zip(self.client_list, self.e_on)])
        # the same η_e on the dense GEMMs of weight-only models (stepmodel.dense_eta_applies)
        self.d_on = np.array([dense_eta_applies(c) for c in self.client_list], dtype=bool)
        self.eta_d = np.array([c.efficiency.expert_compute if on else 1.0 for c, on in zip(self.client_list, self.d_on)])
        # each client's own η_f8 (W8A8 FP8 experts, stepmodel.expert_fp8_applies)
        self.f_on = np.array([expert_fp8_applies(c) for c in self.client_list], dtype=bool)
        self.eta_f = np.array([c.efficiency.expert_fp8 if on else 1.0 for c, on in zip(self.client_list, self.f_on)])
        # each client's own η_d8 (block-scaled FP8 dense GEMMs, stepmodel.dense_fp8_applies; session 12)
        self.g_on = np.array([dense_fp8_applies(c) for c in self.client_list], dtype=bool)
        self.eta_g = np.array([c.efficiency.dense_fp8 if on else 1.0 for c, on in zip(self.client_list, self.g_on)])
        for j, c in enumerate(self.client_list):
            prm = client_params(c)
            e = c.efficiency
            self.prm0[j] = prm
            self.harness_s[j] = getattr(c, "harness_step_ms", 0.0) * 1e-3
            self.raw[j] = (prm[K.P_FPEAK] / self.eta_d[j] / self.eta_g[j] / e.compute, prm[K.P_FPEAK_ATTN] / e.compute, prm[K.P_BW] / e.memory,
                           prm[K.P_BW_ONCHIP] / e.memory if prm[K.P_GENZ] > 0 else prm[K.P_BW_ONCHIP],
                           prm[K.P_TP_BETA] / e.network, prm[K.P_PP_BETA] / e.network,
                           prm[K.P_EP_BETA] / e.network if prm[K.P_EP_BETA] > 0 else 0.0,
                           1.0 if prm[K.P_GENZ] > 0 else 0.0,
                           prm[K.P_FPEAK_EXPERT] / self.eta_e[j] / self.eta_f[j] / e.compute)   # expert GEMM peak (own format)
        self._built = True
        return self

    def params(self, eta_c: float, eta_m: float, tau_us: float, eta_n: float = 1.0,
               step_ms: float | None = None, eta_pf: float | None = None, seq_us: float | None = None,
               coll_us: float | None = None, eta_e: float | None = None, eta_f8: float | None = None,
               eta_d8: float | None = None) -> np.ndarray:
        """Parameter rows at trial efficiencies; ``step_ms`` (``eta_pf``, ``seq_us``, ``coll_us``,
        ``eta_e``, ``eta_f8``) None keeps each client's own per-step overhead (prefill-step efficiency, host
        time per sequence, per-collective latency, expert-GEMM efficiency, W8A8 FP8 expert efficiency);
        ``eta_d8`` likewise for the block-scaled FP8 dense GEMMs (η_d8)."""
        prm = self.prm0.copy()
        r = self.raw
        eta_d_rows = self.eta_d if eta_e is None else np.where(self.d_on, eta_e, 1.0)
        eta_g_rows = self.eta_g if eta_d8 is None else np.where(self.g_on, eta_d8, 1.0)
        prm[:, K.P_FPEAK] = r[:, 0] * eta_c * eta_d_rows * eta_g_rows
        prm[:, K.P_FPEAK_ATTN] = r[:, 1] * eta_c
        # rows where η_e does not act (GenZ compat; outside stepmodel.EXPERT_ETA_SCOPE) keep 1
        eta_e_rows = self.eta_e if eta_e is None else np.where(self.e_on, eta_e, 1.0)
        eta_f_rows = self.eta_f if eta_f8 is None else np.where(self.f_on, eta_f8, 1.0)
        prm[:, K.P_FPEAK_EXPERT] = r[:, 8] * eta_c * eta_e_rows * eta_f_rows
        prm[:, K.P_BW] = r[:, 2] * eta_m
        prm[:, K.P_BW_ONCHIP] = np.where(r[:, 7] > 0, r[:, 3] * eta_m, r[:, 3])
        prm[:, K.P_TP_BETA] = r[:, 4] * eta_n
        prm[:, K.P_PP_BETA] = r[:, 5] * eta_n
        prm[:, K.P_EP_BETA] = r[:, 6] * eta_n
        prm[:, K.P_TAU] = tau_us * 1e-6
        if step_ms is not None:   # (+ the client's harness time, which no calibration replaces)
            prm[:, K.P_STEP_OVH] = step_ms * 1e-3 + self.harness_s
        if eta_pf is not None:
            prm[:, K.P_PF_SLOW] = 1.0 / eta_pf - 1.0
        if seq_us is not None:
            prm[:, K.P_SEQ_OVH] = seq_us * 1e-6
        if coll_us is not None:   # GenZ-compat rows keep MODEL.md's fixed start-up
            prm[:, K.P_S0] = np.where(self.raw[:, 7] > 0, self.prm0[:, K.P_S0], coll_us / 1e6)
        return prm

    def times(self, eta_c: float, eta_m: float, tau_us: float, eta_n: float = 1.0, step_ms: float | None = None,
              eta_pf: float | None = None, prm=None, seq_us: float | None = None,
              coll_us: float | None = None, eta_e: float | None = None, eta_f8: float | None = None,
              eta_d8: float | None = None) -> np.ndarray:
        """Unweighted time of every step (s)."""
        if not self._built:
            self.build()
        if prm is None:
            prm = self.params(eta_c, eta_m, tau_us, eta_n, step_ms, eta_pf, seq_us, coll_us, eta_e, eta_f8, eta_d8)
        out = np.zeros(len(self.rows))
        _cost_steps(prm, self.row, self.pf_off, self.pf_past, self.pf_new, self.pf_done,
                    self.dec_off, self.dec_w, self.dec_s, self.dec_k, out)
        return out

    def totals(self, n_owners: int, *args, **kw) -> np.ndarray:
        """Weighted time per owner."""
        t = self.times(*args, **kw)
        return np.bincount(self.own, weights=t * self.w, minlength=n_owners)
