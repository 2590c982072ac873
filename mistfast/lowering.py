"""Lowering: a validated spec becomes the flat arrays of the numba kernels. The one place that
does it, for both shapes of a run:

* a single client (``Point``) is a one-stage pipeline on one pool of ``dp`` identical replicas
  routed round robin. Round robin over replicas that never interact (one replica, or an open
  loop) is exact when decided up front, so these points are lowered for
  ``kernels.cluster.simulate_points``: many points (and their replicas) in one kernel call, which
  is what makes sweeps fast. A closed loop over several replicas is lowered as what it is, its
  one-stage pipeline (``splits_up_front``, ``one_stage_scenario``);
* anything else (``PipelinePoint``: several clients, servers, tiers, links or stages) becomes the
  topology, pool, route, resource and stage tables of ``kernels.cluster.simulate_cluster``.

Both share the per-client vectors (step-model parameters, scheduler, globals, metrics). Sizes
moved between stages follow MODEL.md §1.3 (correct column). Nothing here runs a kernel or builds
a Dataset (runner.py and results.py do).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import stepmodel
from .kernels import cluster as CL
from .kernels import engine as E
from .kernels import metrics as M
from .limits import HASH_BLOCK_TOKENS
from .seeds import seed_child
from .specs import ClientSpec, PipelineSpec, ServerSpec, SLOSpec, SimulationSpec, SpecError, StageSpec
from .workload import Requests

BATCHING_CODE = {"static": E.STATIC, "continuous": E.CONTINUOUS, "mixed": E.MIXED, "chunked": E.CHUNKED}


POLICY_CODE = {"fcfs": E.FCFS, "spf": E.SPF, "lwl": E.LWL}




ROUTING = {name: i for i, name in enumerate(CL.ROUTING_NAMES)}


@dataclass(frozen=True)
class Point:
    """One single-client configuration point (a one-stage pipeline on ``client.dp`` replicas routed
    round robin): the client, its requests and the run settings."""
    client: ClientSpec
    requests: Requests
    simulation: SimulationSpec
    slo: SLOSpec
    branches: int = 1
    concurrency: int = 0      # closed loop: users in flight (0 = open loop)
    think_s: float = 0.0
    quantiles: tuple = ()     # [metrics] quantiles (none: no *_quantile_ms variables)
    scenario: object = None   # the validated scenario (its one-stage pipeline's labels: results.stacked_point_tables)


@dataclass(frozen=True)
class PipelinePoint:
    """One multi-client configuration point: a scenario with ``is_pipeline``, its requests and the
    seed its pipeline-class and tier draws come from."""
    scenario: object
    requests: Requests
    seed_seq: np.random.SeedSequence


# ----------------------------------------------------------------------------- per-client vectors
def scheduler_vector(client: ClientSpec) -> np.ndarray:
    """The LLM scheduler settings of a client as the kernel's flat vector."""
    s = client.scheduler
    sch = np.zeros(E.N_SCHED)
    kv_blocks = client.kv_capacity_blocks()
    prefix_blocks = 0
    if s.prefix_caching:
        # fixed carve-out of KV memory for the prefix cache, counted in 512-token hash blocks
        carve = int(kv_blocks * s.prefix_cache_fraction)
        prefix_blocks = max(1, carve * s.block_size // HASH_BLOCK_TOKENS)
        kv_blocks -= carve
    sch[E.S_BATCHING] = BATCHING_CODE[s.batching]
    sch[E.S_POLICY] = POLICY_CODE[s.policy]
    sch[E.S_MAX_TOKENS] = s.max_batched_tokens
    sch[E.S_MAX_SEQS] = s.max_batch_size
    sch[E.S_CHUNK] = s.chunk_size
    sch[E.S_BLOCK] = s.block_size
    sch[E.S_TOTAL_BLOCKS] = min(kv_blocks, 2**52)
    sch[E.S_WATERMARK] = int(s.watermark * min(kv_blocks, 2**52))
    sch[E.S_PREEMPTION] = 1.0 if s.preemption else 0.0
    sch[E.S_PREFIX_BLOCKS] = prefix_blocks
    sch[E.S_STATIC_PAD] = 1.0 if s.static_pad else 0.0
    sch[E.S_AGING] = s.aging_s
    sch[E.S_MAX_MODEL_LEN] = client.model.max_model_len
    sch[E.S_SEQS_PER_STEP] = 1.0 if s.max_batch_size_scope == "step" else 0.0
    sch[E.S_PP_MB] = 1.0 if pp_micro_batching(client) else 0.0
    sch[E.S_PREFILL_APART] = 1.0 if s.batching == "chunked" and not s.mix_prefill else 0.0
    sch[E.S_KV_RESERVE] = 1.0 if s.kv_reserve == "sglang" else 0.0
    return sch


def pp_micro_batching(client: ClientSpec) -> bool:
    """Does the client pipeline micro-batches over its PP stages (ENGINE_SEMANTICS.md)? Only with
    pp > 1; scheduler.micro_batching, by default on unless the client is in GenZ compat."""
    if client.pp <= 1:
        return False
    on = client.scheduler.micro_batching
    # (MIST's per-step batch limit is a sequential-engine rule: no micro-batching by default with it)
    return on if on is not None else (client.reference != "genz" and client.scheduler.max_batch_size_scope != "step")


def global_vector(sim: SimulationSpec, concurrency: int, think_s: float, hash_block: int, log_cap: int,
                  decode_runs: bool = True) -> np.ndarray:
    g = np.zeros(CL.N_G)
    g[CL.G_HORIZON] = sim.horizon_s
    g[CL.G_MAX_SIM] = sim.max_sim_time_s if sim.max_sim_time_s is not None else 10.0 * sim.horizon_s
    g[CL.G_DRAIN] = 1.0 if sim.drain else 0.0
    g[CL.G_CONC] = concurrency
    g[CL.G_THINK] = think_s
    g[CL.G_LOG_CAP] = log_cap
    g[CL.G_HASH_BLOCK] = hash_block
    g[CL.G_DECODE_RUNS] = 1.0 if decode_runs else 0.0
    return g


def closed_loop_users(arrival) -> int:
    """Users in flight of a closed-loop arrival process; 0 (open loop) for any other process."""
    return (arrival.concurrency or 0) if arrival.process == "closed_loop" else 0


def metric_vector(sim: SimulationSpec, slo: SLOSpec, quantiles=()) -> np.ndarray:
    mp = np.zeros(M.N_MPARAMS)
    mp[M.M_NQ] = len(quantiles)
    mp[M.M_Q:M.M_Q + len(quantiles)] = quantiles
    mp[M.M_SLO_TTFT] = slo.ttft_ms / 1e3
    mp[M.M_SLO_TPOT] = slo.tpot_ms / 1e3
    mp[M.M_SLO_E2E] = np.inf if slo.e2e_ms is None else slo.e2e_ms / 1e3
    mp[M.M_WARMUP] = sim.warmup_s
    mp[M.M_HORIZON] = sim.horizon_s
    mp[M.M_PCT_COMPAT] = 1.0 if sim.percentile_method == "compat" or sim.metrics == "mist" else 0.0
    return mp


def dense_hashes(reqs: Requests) -> tuple[np.ndarray, np.ndarray, int]:
    """Remap hash ids to 0..H-1 so the kernel can index arrays by them."""
    if reqs.hash_ids.size == 0:
        return reqs.hash_offsets.astype(np.int64), np.zeros(0, np.int64), 0
    uniq, inv = np.unique(reqs.hash_ids, return_inverse=True)
    return reqs.hash_offsets.astype(np.int64), inv.astype(np.int64), int(uniq.size)


def split_replicas(reqs: Requests, dp: int) -> list[np.ndarray]:
    """Round-robin assignment of requests to ``dp`` identical engines (exact for round robin:
    the replicas never interact)."""
    idx = np.arange(len(reqs))
    return [idx[r::dp] for r in range(dp)]


def splits_up_front(pt: Point) -> bool:
    """Can the round robin of a single-client point over its replicas be decided before the run?
    Exactly when the replicas never interact: one replica, or an open loop (request i goes to
    replica i mod dp). In a closed loop a returning user's next request goes to the replica round
    robin picks when it arrives, and when it arrives depends on every replica's progress: such a
    point runs as its one-stage pipeline (``one_stage_scenario``), one kernel call for the pool."""
    return pt.client.dp == 1 or pt.concurrency == 0


def one_stage_scenario(pt: Point):
    """The scenario of a single-client point's one-stage pipeline: its client on a round-robin LLM
    stage, with the point's own client, run settings, SLO and branches (sweeps and calibration
    replace them in the point, not in its scenario)."""
    if pt.scenario is None:
        raise SpecError([f"clients.{pt.client.name}.dp = {pt.client.dp}: a closed-loop point over several "
                         "replicas runs as its one-stage pipeline and needs its scenario (build points with "
                         "lowering.scenario_point)"])
    pipe = PipelineSpec(name="default", branches=pt.branches,
                        stages=[StageSpec(kind="llm", pool=pt.client.name, routing="round_robin")])
    return pt.scenario.model_copy(update={"clients": [pt.client], "simulation": pt.simulation, "slo": pt.slo,
                                          "pipelines": [pipe]})


def metric_vectors(points: list[Point]) -> np.ndarray:
    """(P, N_MPARAMS) metric vectors of points, computed once per distinct (run settings, SLO,
    quantiles) (sweep points share them)."""
    mp_cache: dict[tuple, np.ndarray] = {}
    for pt in points:
        mkey = (id(pt.simulation), id(pt.slo), pt.quantiles)
        if mkey not in mp_cache:
            mp_cache[mkey] = metric_vector(pt.simulation, pt.slo, pt.quantiles)
    return np.stack([mp_cache[(id(pt.simulation), id(pt.slo), pt.quantiles)] for pt in points]) if points else \
        np.zeros((0, M.N_MPARAMS))


# ----------------------------------------------------------------------------- single-client points
@dataclass
class LoweredPoints:
    """Single-client points as ``CL.simulate_points`` takes them: one row per sub-point (a data-
    parallel replica of a point), requests concatenated in sub-point order."""
    owner: list            # the point of each sub-point
    sub_idx: list          # the point's request indices each sub-point serves
    prm: np.ndarray        # (ns, N_PARAMS) step-model parameters
    sch: np.ndarray        # (ns, N_SCHED) scheduler vectors
    gv: np.ndarray         # (ns, N_G) run settings
    offsets: np.ndarray    # (ns + 1,) first request of each sub-point
    arrival_in: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    branches: np.ndarray
    hash_off: np.ndarray
    hash_ids: np.ndarray
    n_hash: np.ndarray
    mp: np.ndarray         # (P, N_MPARAMS) metric vectors, one per point


def lower_points(points: list[Point], log_steps: int = 0, decode_runs: bool = True) -> LoweredPoints:
    """Expand data-parallel replicas into sub-points and flatten everything into kernel arrays
    (points for which ``splits_up_front`` holds). The parameter vectors of a client object are
    computed once (sweeps share client objects)."""
    if not all(splits_up_front(pt) for pt in points):
        raise ValueError("lower_points: a closed-loop point over several replicas runs as its one-stage pipeline")
    sub_idx, owner = [], []
    for q, pt in enumerate(points):
        for idx in split_replicas(pt.requests, pt.client.dp):
            sub_idx.append(idx)
            owner.append(q)
    ns = len(sub_idx)
    prm_cache: dict[int, tuple] = {}
    prm = np.empty((ns, stepmodel.K.N_PARAMS))
    sch = np.empty((ns, E.N_SCHED))
    gv = np.empty((ns, CL.N_G))
    offsets = np.zeros(ns + 1, np.int64)
    n_hash = np.zeros(ns, np.int64)
    arr_l, pr_l, out_l, br_l, ho_l, hi_l = [], [], [], [], [], []
    hbase = 0
    gv_cache: dict[tuple, np.ndarray] = {}     # sweep points share their run settings and requests
    hash_cache: dict[int, tuple] = {}
    for s, (q, idx) in enumerate(zip(owner, sub_idx)):
        pt = points[q]
        key = id(pt.client)
        if key not in prm_cache:
            prm_cache[key] = (stepmodel.client_params(pt.client), scheduler_vector(pt.client))
        prm[s], sch[s] = prm_cache[key]
        r = pt.requests._take(idx) if pt.client.dp > 1 else pt.requests
        gkey = (id(pt.simulation), pt.concurrency, pt.think_s, r.hash_block_tokens)
        if gkey not in gv_cache:
            gv_cache[gkey] = global_vector(pt.simulation, pt.concurrency, pt.think_s, r.hash_block_tokens, log_steps, decode_runs)
        gv[s] = gv_cache[gkey]
        offsets[s + 1] = offsets[s] + len(r)
        arr_l.append(r.arrival_s)
        pr_l.append(r.input_tokens)
        out_l.append(r.output_tokens)
        br_l.append(np.full(len(r), pt.branches, np.int64))
        if pt.client.dp > 1:   # (a replica's requests are a fresh object: no id to key on)
            ho, hi, nh = dense_hashes(r)
        else:
            if id(r) not in hash_cache:
                hash_cache[id(r)] = dense_hashes(r)
            ho, hi, nh = hash_cache[id(r)]
        ho_l.append(ho + hbase)
        hi_l.append(hi)
        hbase += hi.size
        n_hash[s] = nh
    cat = lambda xs, dt: np.concatenate(xs).astype(dt, copy=False) if xs else np.zeros(0, dt)  # noqa: E731
    mp = metric_vectors(points)
    return LoweredPoints(owner, sub_idx, prm, sch, gv, offsets, cat(arr_l, np.float64), cat(pr_l, np.int64),
                         cat(out_l, np.int64), cat(br_l, np.int64), cat(ho_l, np.int64), cat(hi_l, np.int64),
                         n_hash, mp)

# ----------------------------------------------------------------------------- pipelines: topology
class Topology:
    """Client instances (replicas expanded), pools, resources and routes of one scenario."""

    def __init__(self, scen):
        self.names: list[str] = []      # instance names
        self.group: list[str] = []      # the spec entry each instance comes from
        self.llm: list[ClientSpec | None] = []
        self.server: list[ServerSpec | None] = []
        for c in scen.clients:
            for i in range(c.dp):
                self.names.append(c.name if c.dp == 1 else f"{c.name}[{i}]")
                self.group.append(c.name)
                self.llm.append(c.replace(dp=1, num_devices=c.tp * c.pp) if c.dp > 1 else c)
                self.server.append(None)
        for s in scen.servers:
            for i in range(s.replicas):
                self.names.append(s.name if s.replicas == 1 else f"{s.name}[{i}]")
                self.group.append(s.name)
                self.llm.append(None)
                self.server.append(s)
        groups = set(self.group)
        if len(groups) != len(scen.clients) + len(scen.servers):
            raise SpecError(["clients/servers: names must be unique"])
        self.C = len(self.names)
        # grouped tiers (private / per-group stores) become one instance per group of replicas;
        # tier_index maps a spec name to its first instance, tier_groups to all of them
        self.tiers, self.tier_index, self.tier_groups = _expand_tiers(scen)
        self.tier_cap = [-1] * len(self.tiers)   # hash blocks; set by chain()
        self.chains: list[list[int]] = []
        self._chain_of: dict[tuple, int] = {}   # grouped hash-mode chains by tier instances
        self.hash_block = 512
        # resources: one read port per tier, one per tier link, one per declared client link,
        # one per group pair on the default network (created on demand)
        self.res_names: list[str] = []
        self.res_cap: list[float] = []
        for t in self.tiers:
            self._res(f"tier:{t.name}", t.tier.bandwidth_GBps * 1e9)
        for t in self.tiers:
            self._res(f"tierlink:{t.name}", t.link.bandwidth_GBps * 1e9 * t.link.efficiency)
        self.links = {}
        for i, l in enumerate(scen.links):
            for gname in l.between:
                if gname not in groups:
                    raise SpecError([f"links[{i}].between = {list(l.between)}: unknown client {gname!r}; "
                                     f"known: {', '.join(sorted(groups))}"])
            rid = self._res(f"link:{l.between[0]}-{l.between[1]}", l.link.bandwidth_GBps * 1e9 * l.link.efficiency)
            self.links[frozenset(l.between)] = (rid, l.link.latency_us * 1e-6)
        self.default_link = scen.network.default_link
        self.topology = scen.network.topology
        self.node = [0] * self.C
        self.rack = [0] * self.C
        if self.topology is not None:
            # pack LLM clients into nodes by their device footprint; CPU hosts sit with node 0
            gpn, npr = self.topology.gpus_per_node, self.topology.nodes_per_rack
            used = 0
            for c in range(self.C):
                if self.llm[c] is None:
                    continue
                k = self.llm[c].tp * self.llm[c].pp
                if used % gpn and (used % gpn) + k > gpn:
                    used += gpn - used % gpn  # start a new node rather than straddle one
                self.node[c] = used // gpn
                used += k
            for c in range(self.C):
                self.rack[c] = self.node[c] // npr
        for s in scen.servers:
            if s.memory_resource is not None and s.memory_resource not in self.tier_index:
                raise SpecError([f"servers.{s.name}.memory_resource = {s.memory_resource!r}: not a tier; "
                                 f"tiers: {', '.join(self.tier_index) or '(none)'}"])
            if s.memory_resource is not None and len(self.tier_groups[s.memory_resource]) > 1:
                raise SpecError([f"servers.{s.name}.memory_resource = {s.memory_resource!r}: a tier with group_size "
                                 "has one instance per group; name a shared tier (no group_size)"])

    def chain(self, tier_names, kv_bytes_per_token, where) -> int:
        """Register the ordered tier list of a hash-mode kv_fetch stage; returns its chain id.
        A tier's capacity in hash blocks follows from its bytes and the model's KV size."""
        ids = []
        for j, nm in enumerate(tier_names):
            if nm not in self.tier_index:
                raise SpecError([f"{where}.tiers[{j}].tier = {nm!r}: unknown tier; known: "
                                 f"{', '.join(self.tier_index) or '(none)'}"])
            if len(self.tier_groups[nm]) > 1:
                raise SpecError([f"{where}.tiers[{j}].tier = {nm!r}: a tier with group_size cannot serve a "
                                 "use_hashes = true stage (one LRU per instance is not modelled); drop group_size "
                                 "or use fixed hit rates"])
            k = self.tier_index[nm]
            ids.append(k)
            cap = int(self.tiers[k].tier.capacity_GB * 1e9 // (self.hash_block * kv_bytes_per_token))
            self.tier_cap[k] = cap if self.tier_cap[k] < 0 else min(self.tier_cap[k], cap)
        if not ids:
            raise SpecError([f"{where}.tiers: a hash-mode kv_fetch stage needs at least one tier"])
        self.chains.append(ids)
        return len(self.chains) - 1

    def chain_instances(self, ids, kv_bytes_per_token) -> int:
        """Register an ordered list of tier instances as a hash-mode chain (reused if seen before)."""
        key = tuple(int(k) for k in ids)
        if key in self._chain_of:
            return self._chain_of[key]
        for k in key:
            cap = int(self.tiers[k].tier.capacity_GB * 1e9 // (self.hash_block * kv_bytes_per_token))
            self.tier_cap[k] = cap if self.tier_cap[k] < 0 else min(self.tier_cap[k], cap)
        self.chains.append(list(key))
        self._chain_of[key] = len(self.chains) - 1
        return self._chain_of[key]

    def _res(self, name, cap):
        self.res_names.append(name)
        self.res_cap.append(float(cap))
        return len(self.res_names) - 1

    def pool(self, names, where) -> list[int]:
        names = [names] if isinstance(names, str) else list(names)
        out = []
        for nm in names:
            ids = [i for i, g in enumerate(self.group) if g == nm] or [i for i, x in enumerate(self.names) if x == nm]
            if not ids:
                raise SpecError([f"{where} = {nm!r}: unknown client; known: {', '.join(sorted(set(self.group)))}"])
            out += ids
        return out

    def _shared(self, name, level):
        if name in self.res_names:
            return self.res_names.index(name)
        lv = self.topology.levels[level]
        return self._res(name, lv.bandwidth_GBps * 1e9 * lv.efficiency)

    def _topo_path(self, a, b):
        """Resources and latency between two clients: the node fabric, node uplinks in a rack,
        rack uplinks across the pod (each a shared resource; cut-through, the level's latency)."""
        lv = self.topology.levels
        na, nb, ra, rb = self.node[a], self.node[b], self.rack[a], self.rack[b]
        if na == nb:
            return [self._shared(f"node{na}", 0)], lv[0].latency_us * 1e-6
        if ra == rb:
            return [self._shared(f"node{na}-up", 1), self._shared(f"node{nb}-up", 1)], lv[1].latency_us * 1e-6
        return ([self._shared(f"node{na}-up", 1), self._shared(f"rack{ra}-up", 2), self._shared(f"rack{rb}-up", 2),
                 self._shared(f"node{nb}-up", 1)], lv[2].latency_us * 1e-6)

    def routes(self):
        """Latency (s) and resource ids of every (source node, destination client) pair;
        nodes are clients then tiers."""
        C, T = self.C, len(self.tiers)
        N = C + T
        lat = np.zeros((N, N))
        res = np.full((N, N, CL.MAX_HOPS), -1, np.int64)
        nres = np.zeros((N, N), np.int64)
        for a in range(C):
            for b in range(C):
                if a == b:
                    continue
                key = frozenset((self.group[a], self.group[b]))
                if self.group[a] == self.group[b]:
                    key = None
                if key in self.links:
                    rid, l = self.links[key]
                elif self.topology is not None:
                    hops, l = self._topo_path(a, b)
                    lat[a, b] = l
                    for h, rid in enumerate(hops):
                        res[a, b, h] = rid
                    nres[a, b] = len(hops)
                    continue
                else:
                    # the default network: one shared link per (group, group) pair
                    nm = f"net:{'-'.join(sorted({self.group[a], self.group[b]}))}"
                    if nm in self.res_names:
                        rid = self.res_names.index(nm)
                    else:
                        d = self.default_link
                        rid = self._res(nm, d.bandwidth_GBps * 1e9 * d.efficiency)
                    l = self.default_link.latency_us * 1e-6
                lat[a, b] = l
                res[a, b, 0] = rid
                nres[a, b] = 1
        for ti, t in enumerate(self.tiers):
            for b in range(C):
                # streaming read: lookup + link latency, bytes through the tier port and the link
                lat[C + ti, b] = t.tier.latency_us * 1e-6 + t.link.latency_us * 1e-6
                res[C + ti, b, 0] = ti
                res[C + ti, b, 1] = T + ti
                nres[C + ti, b] = 2
        return lat, res, nres


def _pool_size(scen, names) -> int:
    """Replica instances of the clients/servers a stage's pool names (unknown names count 0)."""
    names = [names] if isinstance(names, str) else list(names or [])
    size = {c.name: c.dp for c in scen.clients} | {s.name: s.replicas for s in scen.servers}
    return sum(size.get(nm, 0) for nm in names)


def _expand_tiers(scen):
    """Tier instances: a tier with ``group_size = g`` gets one instance per g consecutive replicas of
    the pool its kv_fetch stages feed (``name[k]``, each with its own bandwidth port and link);
    the others stay one shared instance. Returns (instances, first instance by name, instances by name)."""
    feeds: dict[str, tuple[int, str]] = {}
    grouped = {t.name for t in scen.tiers if t.group_size is not None}
    for p in scen.pipelines:
        for i, st in enumerate(p.stages):
            if st.kind != "kv_fetch" or i + 1 >= len(p.stages):
                continue
            n = _pool_size(scen, p.stages[i + 1].pool)
            for j, th in enumerate(st.tiers):
                if th.tier not in grouped:
                    continue
                where = f"pipelines[{p.name}].stages[{i}].tiers[{j}]"
                if th.tier in feeds and feeds[th.tier][0] != n:
                    raise SpecError([f"{where}.tier = {th.tier!r}: a tier with group_size must feed pools of one size; "
                                     f"{feeds[th.tier][1]} feeds {feeds[th.tier][0]} replicas, this stage {n}"])
                feeds.setdefault(th.tier, (n, where))
    tiers, first, groups = [], {}, {}
    for t in scen.tiers:
        n_inst = 1
        if t.group_size is not None and t.name in feeds:
            n_inst = -(-feeds[t.name][0] // t.group_size)
        first[t.name] = len(tiers)
        groups[t.name] = list(range(len(tiers), len(tiers) + n_inst))
        if n_inst == 1:
            tiers.append(t)
        else:
            tiers += [t.model_copy(update={"name": f"{t.name}[{k}]"}) for k in range(n_inst)]
    return tiers, first, groups


def lower_pipeline(scen, reqs, seed_seq, log_steps: int = 0, decode_runs: bool = True) -> dict:
    """Flatten a pipeline scenario and its requests into the arrays of ``CL.simulate_cluster``."""
    topo = Topology(scen)
    topo.hash_block = reqs.hash_block_tokens
    C = topo.C
    kind = np.zeros(C, np.int64)
    prm = np.zeros((C, stepmodel.K.N_PARAMS))
    sch = np.zeros((C, E.N_SCHED))
    srv = np.zeros((C, CL.N_SRV))
    for c in range(C):
        if topo.llm[c] is not None:
            cl = topo.llm[c]
            prm[c] = stepmodel.client_params(cl)
            sch[c] = scheduler_vector(cl)
            # drain-time router: a 2,048-token prefill and a 32-decode step at 1K context, costed once
            t_pf = stepmodel.step_latency(cl, prefill=[(0, 2048)]).total_s
            t_dec = stepmodel.step_latency(cl, decode=[(1, 1024)] * 32).total_s if cl.model.architecture == "decoder" else 0.0
            srv[c, CL.SRV_DRAIN_PF_S_PER_TOKEN] = t_pf / 2048
            srv[c, CL.SRV_DRAIN_DEC_S] = t_dec / 32
        else:
            s = topo.server[c]
            if s.kind == "cpu":
                kind[c] = CL.CK_SLOTS
                srv[c, CL.SRV_SLOTS] = s.slots
                srv[c, CL.SRV_BASE_S] = s.base_ms * 1e-3
                srv[c, CL.SRV_PER_TOKEN_S] = s.per_token_us * 1e-6
            else:
                kind[c] = CL.CK_BATCH
                fq, fb, bq = s.ivf_costs()
                srv[c, CL.SRV_BATCH_MAX] = s.max_batch
                srv[c, CL.SRV_FLOP_Q] = fq
                srv[c, CL.SRV_BYTES_BATCH] = fb
                srv[c, CL.SRV_BYTES_Q] = bq
                srv[c, CL.SRV_FLOPS] = s.device.peak_flops("fp32")
                srv[c, CL.SRV_BW] = s.device.memory_bandwidth_GBps * 1e9
                srv[c, CL.SRV_MEM_RES] = -1 if s.memory_resource is None else topo.tier_index[s.memory_resource]
                srv[c, CL.SRV_OVERLAP] = 1.0 if s.overlap else 0.0
    # ---- pools (one per stage spec of each pipeline) ------------------------------------------
    pools: list[tuple[list[int], int, float]] = []
    pipes = scen.pipelines or [default_pipeline(scen)]
    n = len(reqs)
    rng = np.random.default_rng(seed_child(seed_seq, 4))
    weights = np.array([p.weight for p in pipes])
    cls = rng.choice(len(pipes), size=n, p=weights / weights.sum()) if len(pipes) > 1 else np.zeros(n, np.int64)
    P = reqs.input_tokens.astype(np.int64)
    O = reqs.output_tokens.astype(np.int64)
    # a request's first prefix-block hash names its user / shared prefix (-1: no hashes)
    hoff = reqs.hash_offsets.astype(np.int64)
    first_hash = np.where(hoff[1:] > hoff[:-1], reqs.hash_ids[np.minimum(hoff[:-1], max(reqs.hash_ids.size - 1, 0))]
                          if reqs.hash_ids.size else -1, -1).astype(np.int64)
    # ---- stage instances, built class by class (vectorised over the class's requests) ------------
    counts = np.zeros(n, np.int64)
    branches = np.ones(n, np.int64)
    stage_rows = []  # (class, [rows]) where a row is a dict of equal-length arrays over the class
    for ci_, pipe in enumerate(pipes):
        idx = np.flatnonzero(cls == ci_)
        if idx.size == 0:
            continue
        branches[idx] = pipe.branches
        rows = _expand_pipeline(pipe, ci_, topo, pools, P[idx], O[idx], rng, scen, first_hash[idx])
        counts[idx] = len(rows)
        stage_rows.append((idx, rows))
    st_off = np.zeros(n + 1, np.int64)
    st_off[1:] = np.cumsum(counts)
    S = int(st_off[-1])
    arrs = {k: np.zeros(S, np.float64 if k == "bytes" else np.int64) for k in ("kind", "pool", "prompt", "output", "bytes", "tier", "flags")}
    for idx, rows in stage_rows:
        for j, row in enumerate(rows):
            pos = st_off[idx] + j
            for k in arrs:
                arrs[k][pos] = row[k]
    pool_off = np.zeros(len(pools) + 1, np.int64)
    pool_off[1:] = np.cumsum([len(p[0]) for p in pools])
    pool_cli = np.array([c for p in pools for c in p[0]], np.int64)
    pool_policy = np.array([p[1] for p in pools], np.int64)
    pool_thresh = np.array([p[2] for p in pools], np.float64)
    # MIST memo: one table per platform (MIST shares a platform's cache between its engines)
    groups: dict[bytes, int] = {}
    for c in range(C):
        if prm[c, stepmodel.K.P_MIST_MEMO] > 0.0:
            key = np.delete(prm[c], stepmodel.K.P_MIST_MEMO).tobytes()
            prm[c, stepmodel.K.P_MIST_MEMO] = groups.setdefault(key, len(groups) + 1)
    for ids, pol, _ in pools:  # clients of MIST-routed pools keep MIST's token load
        if pol == CL.RT_MIST_JSQ and len(ids) > 1:
            srv[list(ids), CL.SRV_MIST_JSQ] = 1.0
    lat, res, nres = topo.routes()
    tcap = np.array([max(c, 0) for c in topo.tier_cap], np.int64)
    chain_off = np.zeros(len(topo.chains) + 1, np.int64)
    chain_off[1:] = np.cumsum([len(c) for c in topo.chains])
    chain_tier = np.array([k for c in topo.chains for k in c], np.int64)
    a = scen.workload.arrival
    g = global_vector(scen.simulation, closed_loop_users(a), a.think_time_s, reqs.hash_block_tokens, log_steps, decode_runs)
    ho, hi, nh = dense_hashes(reqs)
    return dict(topo=topo, cli_kind=kind, cli_prm=prm, cli_sch=sch, cli_srv=srv, pool_off=pool_off, pool_cli=pool_cli,
                pool_policy=pool_policy, pool_thresh=pool_thresh, res_cap=np.array(topo.res_cap), route_lat=lat,
                route_res=res, route_nres=nres, g=g, arrival_in=reqs.arrival_s.astype(np.float64),
                branches=branches, hash_off=ho, hash_ids=hi, n_hash=nh, st_off=st_off, st_kind=arrs["kind"],
                st_pool=arrs["pool"], st_prompt=arrs["prompt"], st_output=arrs["output"], st_bytes=arrs["bytes"],
                st_tier=arrs["tier"], st_flags=arrs["flags"], cls=cls, pipes=pipes, tcap=tcap, chain_off=chain_off,
                chain_tier=chain_tier)


def default_pipeline(scen) -> PipelineSpec:
    return PipelineSpec(stages=[StageSpec(kind="llm", pool=scen.clients[0].name,
                                          routing="round_robin")])


def _kv_bytes_of(topo, pool_ids) -> float:
    c = topo.llm[pool_ids[0]]
    if c is None:
        raise SpecError([f"pool {topo.names[pool_ids[0]]!r}: KV moves only to an LLM client"])
    if c.reference == "genz":
        return float(c.model.kv_elems_per_token())  # MIST moves 1 B per KV element (MODEL.md §2.4)
    return c.kv_bytes_per_token()


def _expand_pipeline(pipe, ci_, topo, pools, P, O, rng, scen, first_hash=None) -> list[dict]:
    """Stage instances of one request class, each field an array over the class's requests."""
    m = P.size
    zeros = np.zeros(m, np.int64)
    rows: list[dict] = []
    prompt = P.copy()            # tokens the next LLM stage must hold (grows with RAG context, past KV)
    ttft_done = False
    prev_kind = None
    restrict = None   # per-request pool of the stage after a grouped-tier kv_fetch (-1: unrestricted)

    def add_pool(stage, names, where):
        ids = topo.pool(names, where)
        pools.append((ids, ROUTING[stage.routing], float(stage.heavy_threshold)))
        return len(pools) - 1, ids

    def row(kind, pool, prm, out, byts, tier=None, flags=0):
        return dict(kind=np.full(m, kind), pool=np.full(m, pool), prompt=np.asarray(prm, np.int64).copy(),
                    output=np.asarray(out, np.int64).copy(), bytes=np.asarray(byts, np.float64).copy(),
                    tier=(np.full(m, -1) if tier is None else tier), flags=np.full(m, flags))

    where0 = f"pipelines[{pipe.name}]"
    for i, st in enumerate(pipe.stages):
        where = f"{where0}.stages[{i}].pool"
        ids_bytes_ids = 4.0 * prompt  # token ids (int32) into the next stage
        if st.kind in ("pre", "post"):
            pid, ids = add_pool(st, st.pool, where)
            tokens = prompt if st.kind == "pre" else O
            if topo.llm[ids[0]] is not None:
                # a model pass (e.g. a ~2B safety filter over prompt + answer): prefill only
                rows.append(row(CL.K_ENCODE, pid, prompt, zeros, 4.0 * tokens if rows else 0.0 * tokens))
            else:
                rows.append(row(CL.K_SERVE, pid, tokens, zeros, 4.0 * tokens if rows else 0.0 * tokens))
        elif st.kind in ("embed", "rerank"):
            pid, ids = add_pool(st, st.pool, where)
            enc = topo.llm[ids[0]]
            if enc is None:
                raise SpecError([f"{where}: an {st.kind} stage runs on an LLM-kind client (an encoder model)"])
            if st.kind == "embed":
                toks = np.minimum(P, enc.model.max_model_len)  # queries are truncated to the encoder's length
            else:
                # cross-encoder over the retrieved docs: k sequences of (query + doc) tokens, as one prefill
                toks = np.minimum(st.docs * (np.minimum(P, 512) + st.doc_tokens), 10**9)
            rows.append(row(CL.K_ENCODE, pid, toks, zeros, ids_bytes_ids if rows else 0.0 * toks))
        elif st.kind == "retrieve":
            pid, ids = add_pool(st, st.pool, where)
            srv = topo.server[ids[0]]
            dim = srv.dim if srv is not None else 768
            # one pooled query vector (fp32) comes from the embedder (MODEL.md §1.3)
            rows.append(row(CL.K_RETRIEVE, pid, P, zeros, np.full(m, 4.0 * dim) if rows else np.zeros(m)))
            prompt = prompt + st.docs * st.doc_tokens
        elif st.kind == "kv_fetch":
            nxt = pipe.stages[i + 1]
            ids = topo.pool(nxt.pool, f"{where0}.stages[{i + 1}].pool")
            kvb = _kv_bytes_of(topo, ids)
            pools.append(([ids[0]], 0, 0.0))  # placeholder pool (the next stage routes)
            if st.use_hashes and any(len(topo.tier_groups.get(th.tier, [0])) > 1 for th in st.tiers):
                # grouped tiers: each user's (first block's) favourite group has its own LRU stores
                chains, restrict = _favourite_chains(st, nxt, topo, pools, ids, kvb, first_hash,
                                                     f"{where0}.stages[{i}]")
                rows.append(row(CL.K_KVFETCH, len(pools) - 1, zeros, zeros, np.full(m, kvb), tier=-2 - chains,
                                flags=CL.F_WRITE_BACK if st.write_back else 0))
            elif st.use_hashes:
                # the prompt's own prefix blocks are looked up in the tiers (LRU contents)
                chain = topo.chain([th.tier for th in st.tiers], kvb, f"{where0}.stages[{i}]")
                rows.append(row(CL.K_KVFETCH, len(pools) - 1, zeros, zeros, np.full(m, kvb),
                                tier=np.full(m, -2 - chain), flags=CL.F_WRITE_BACK if st.write_back else 0))
            else:
                tier = _sample_tiers(st, topo, m, rng, f"{where0}.stages[{i}]")
                restrict = _favourite_groups(st, nxt, topo, pools, ids, tier, rng)
                past = np.full(m, st.past_tokens, np.int64)
                rows.append(row(CL.K_KVFETCH, len(pools) - 1, past, zeros, past * kvb, tier=tier))
                prompt = prompt + past
        elif st.kind in ("llm", "verify"):
            pid, ids = add_pool(st, st.pool, where)
            if st.kind == "llm":
                flags = CL.F_COUNT | (0 if ttft_done else CL.F_TTFT)
                ttft_done = True
                rows.append(row(CL.K_LLM, pid, prompt, O, ids_bytes_ids if rows and prev_kind != "kv_fetch" else 0.0 * prompt, flags=flags))
                prompt = prompt + O
            else:
                rows.append(row(CL.K_LLM, pid, prompt, np.ones(m), ids_bytes_ids if rows else 0.0 * prompt))
        elif st.kind == "prefill":
            pid, ids = add_pool(st, st.pool, where)
            _overflow_pool(st, topo, pools, f"{where0}.stages[{i}].overflow_pool")
            flags = CL.F_COUNT | (0 if ttft_done else CL.F_TTFT)
            ttft_done = True
            rows.append(row(CL.K_PREFILL, pid, prompt, np.ones(m), ids_bytes_ids if rows and prev_kind != "kv_fetch" else 0.0 * prompt, flags=flags))
        elif st.kind == "decode":
            pid, ids = add_pool(st, st.pool, where)
            _overflow_pool(st, topo, pools, f"{where0}.stages[{i}].overflow_pool")
            kvb = _kv_bytes_of(topo, ids)
            # the prompt's KV moves from the prefill client (a shared prefix is sent once)
            rows.append(row(CL.K_DECODE, pid, prompt, O, prompt * kvb, flags=CL.F_COUNT | _decode_flags(st)))
            prompt = prompt + O
        elif st.kind == "reason":
            pid, ids = add_pool(st, st.pool, where)
            vid = None
            if st.verifier is not None:
                vid, _ = add_pool(StageSpec(kind="verify", pool=st.verifier), st.verifier, f"{where0}.stages[{i}].verifier")
            # segments taken: the verifier stops the loop after each segment with stop_prob
            # (at most `steps`); the segments not taken are skipped stages
            if st.stop_prob > 0:
                taken = np.minimum(rng.geometric(st.stop_prob, size=m), st.steps)
            else:
                taken = np.full(m, st.steps)
            for k in range(st.steps):
                active = k < taken
                flags = CL.F_COUNT | (0 if ttft_done else CL.F_TTFT)
                ttft_done = True
                seg = np.full(m, st.step_tokens, np.int64)
                r_ = row(CL.K_LLM, pid, prompt, seg, 4.0 * prompt if rows else 0.0 * prompt, flags=flags)
                r_["kind"] = np.where(active, CL.K_LLM, CL.K_SKIP)
                rows.append(r_)
                prompt = prompt + seg * active
                if vid is not None:
                    # process reward model: prefill of the context so far plus one output token
                    v_ = row(CL.K_LLM, vid, prompt, np.ones(m), 4.0 * prompt)
                    v_["kind"] = np.where(active, CL.K_LLM, CL.K_SKIP)
                    rows.append(v_)
        if restrict is not None and st.kind != "kv_fetch":
            # the KV lives in the favourite client's group store: only that group can take the request
            rows[-1]["pool"] = np.where(restrict >= 0, restrict, rows[-1]["pool"])
            restrict = None
        prev_kind = st.kind
    return rows


def _overflow_pool(st, topo, pools, where):
    """Splitwise overflow: the stage's pool (the last one added) is marked as overflowing into the
    pool added right after it (kernels.cluster.RT_OVERFLOW); its threshold slot holds the prefill
    overload threshold in tokens."""
    if st.overflow_pool is None:
        return
    ids = topo.pool(st.overflow_pool, where)
    for c in ids:
        if topo.llm[c] is None:
            raise SpecError([f"{where} = {st.overflow_pool!r}: {topo.names[c]!r} is not an LLM client"])
    main, pol, _ = pools[-1]
    pools[-1] = (main, pol + CL.RT_OVERFLOW, float(st.overflow_tokens))
    pools.append((ids, pol, 0.0))


def _decode_flags(st) -> int:
    """Kernel flags of a decode stage's pipeline features (issue 12): KV backpressure, layer-wise KV."""
    return ((CL.F_KV_BACKPRESSURE if st.kv_backpressure else 0)
            | (CL.F_LAYERWISE if st.kv_transfer == "layerwise" else 0))


def _favourite_groups(st, nxt, topo, pools, ids, tier, rng):
    """Favourite-client access to grouped (private / per-group) tiers, in place on ``tier``.

    Each request has a favourite replica, uniform over the next stage's pool ``ids``; a read from a
    tier with ``group_size = g`` is served by the instance of the favourite's group (position // g)
    and the next stage may route only to that group's replicas (a sub-pool with the stage's policy).
    Returns the per-request sub-pool id (-1: a miss or a shared tier, routed over the whole pool),
    or None when no tier of the stage is grouped (no random draw: results stay as before)."""
    grouped = [(th.tier, topo.tier_groups[th.tier]) for th in st.tiers if len(topo.tier_groups[th.tier]) > 1]
    if not grouped:
        return None
    fav = rng.integers(len(ids), size=tier.size)
    restrict = np.full(tier.size, -1, np.int64)
    for name, inst in grouped:
        g = topo.tiers[inst[0]].group_size   # replicas per instance (the last group may be short)
        sub = []
        for k in range(len(inst)):
            pools.append((ids[k * g:(k + 1) * g], ROUTING[nxt.routing], float(nxt.heavy_threshold)))
            sub.append(len(pools) - 1)
        hit = tier == inst[0]
        grp = fav[hit] // g
        tier[hit] = np.asarray(inst, np.int64)[grp]
        restrict[hit] = np.asarray(sub, np.int64)[grp]
    return restrict


def _favourite_chains(st, nxt, topo, pools, ids, kvb, first_hash, where):
    """Hash-mode kv_fetch over grouped tiers: per-request chain ids and next-stage sub-pools.

    A user's favourite replica follows from the first prefix-block hash of its requests (a fixed
    multiplicative hash, so every request of a user or shared prefix has the same favourite); each
    grouped tier is replaced by the favourite group's instance (its own LRU), and the next stage
    routes within the group of the stage's smallest grouped tier, where the request's blocks are
    read and written."""
    for j, th in enumerate(st.tiers):
        if th.tier not in topo.tier_index:
            raise SpecError([f"{where}.tiers[{j}].tier = {th.tier!r}: unknown tier; known: "
                             f"{', '.join(topo.tier_index) or '(none)'}"])
    if first_hash is None or (first_hash < 0).any():
        raise SpecError([f"{where}: use_hashes with a grouped tier needs prefix-block hashes on every request "
                         "(a Mooncake trace or workload.prefix_tokens)"])
    P = len(ids)
    with np.errstate(over="ignore"):   # Fibonacci hashing: the product wraps, its high bits mix
        mixed = first_hash.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    fav = (mixed >> np.uint64(33)).astype(np.int64) % P
    per_tier = []
    for th in st.tiers:
        inst = np.asarray(topo.tier_groups[th.tier], np.int64)
        g = topo.tiers[inst[0]].group_size if inst.size > 1 else P
        per_tier.append((inst, g))
    cols = np.stack([inst[np.minimum(fav // g, inst.size - 1)] for inst, g in per_tier], axis=1)
    chains = np.array([topo.chain_instances(row_, kvb) for row_ in cols], np.int64)
    gmin = min(g for inst, g in per_tier if inst.size > 1)
    n_groups = -(-P // gmin)
    sub = []
    for k in range(n_groups):
        pools.append((ids[k * gmin:(k + 1) * gmin], ROUTING[nxt.routing], float(nxt.heavy_threshold)))
        sub.append(len(pools) - 1)
    return chains, np.asarray(sub, np.int64)[fav // gmin]


def _sample_tiers(st, topo, m, rng, where) -> np.ndarray:
    """Serving tier per request: tier n with probability m_{n-1} h_n, a miss (-1) with m_N."""
    probs, ids = [], []
    miss = 1.0
    for j, th in enumerate(st.tiers):
        if th.tier not in topo.tier_index:
            raise SpecError([f"{where}.tiers[{j}].tier = {th.tier!r}: unknown tier; known: "
                             f"{', '.join(topo.tier_index) or '(none)'}"])
        probs.append(miss * th.hit)
        ids.append(topo.tier_index[th.tier])
        miss *= 1.0 - th.hit
    probs.append(miss)
    ids.append(-1)
    choice = rng.choice(len(probs), size=m, p=np.array(probs) / sum(probs))
    return np.asarray(ids, np.int64)[choice]




# ----------------------------------------------------------------------------- a scenario's point
def scenario_point(spec, requests: Requests, seed_seq: np.random.SeedSequence) -> Point | PipelinePoint:
    """The point of a validated scenario: a single client (batched with others in one kernel call)
    or a pipeline (its own kernel call)."""
    if spec.is_pipeline:
        return PipelinePoint(spec, requests, seed_seq)
    a = spec.workload.arrival
    return Point(spec.client, requests, spec.simulation, spec.slo, spec.workload.branches,
                 concurrency=closed_loop_users(a),
                 think_s=a.think_time_s, quantiles=tuple(spec.metrics.quantiles or ()), scenario=spec)
