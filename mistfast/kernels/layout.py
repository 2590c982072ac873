"""Codes and column layouts of the cluster kernels: client and stage kinds, routing policies, the
server parameter rows, the settings vector ``g``, per-client statistics, and the integer columns of
the request (``Q_*``) and client (``I_*``, ``F_*``) state tables. Python callers reach them as
``cluster.*`` (re-exported there)."""
from __future__ import annotations

from .engine import N_LOG


# ---- client kinds ---------------------------------------------------------------------------
CK_LLM, CK_SLOTS, CK_BATCH = 0, 1, 2
# ---- stage kinds -----------------------------------------------------------------------------
K_LLM, K_PREFILL, K_DECODE, K_ENCODE, K_SERVE, K_RETRIEVE, K_KVFETCH = 0, 1, 2, 3, 4, 5, 6
K_SKIP = 7        # a stage the request does not take (e.g. reasoning steps after the verifier said stop)
STAGE_NAMES = ("llm", "prefill", "decode", "encode", "serve", "retrieve", "kv_fetch", "skipped")
F_TTFT = 1        # the first token emitted in this stage is the request's first token
F_COUNT = 2       # tokens emitted in this stage count as the request's output tokens
# a decode stage with KV backpressure: its client reserves the KV blocks before the transfer starts;
# until then the request holds its blocks on the prefill client (ENGINE_SEMANTICS.md, MODEL.md §4.4)
F_KV_BACKPRESSURE = 4
# a decode stage whose KV moves layer by layer, overlapped with the prefill step that produced it
F_LAYERWISE = 8
# a hash-mode kv_fetch stage whose new blocks, written to the first tier after the prefill, move as a
# flow over the tier's port and link (competing with reads); flow slot n + C + r
F_WRITE_BACK = 16
# ---- routing policies -----------------------------------------------------------------------------
RT_RR, RT_LEAST_PREFILL, RT_LEAST_DECODE, RT_LEAST_KV, RT_JSQ, RT_HEAVY_LIGHT = 0, 1, 2, 3, 4, 5
# 6 = least_requests: the fewest requests assigned, _choose's last branch
RT_DRAIN = 7
RT_MIST_JSQ = 8   # MIST's disaggregated join-shortest-queue (docs/mist_parity.md)
# Splitwise overflow: pool_policy[p] = RT_OVERFLOW + policy marks a pool whose overloaded pick goes to
# the overflow (mixed) pool p + 1; pool_thresh[p] is then the prefill overload threshold in tokens
RT_OVERFLOW = 100
ROUTING_NAMES = ("round_robin", "least_prefill_tokens", "least_decodes", "least_kv", "join_shortest_queue",
                 "heavy_light", "least_requests", "least_drain_time", "mist_jsq")
# LLM clients: step-time estimates for the drain-time router, measured once on dummy batches
SRV_DRAIN_PF_S_PER_TOKEN = 0
SRV_DRAIN_DEC_S = 1
# ---- server parameters (CK_SLOTS / CK_BATCH) ---------------------------------------------------------
SRV_SLOTS, SRV_BASE_S, SRV_PER_TOKEN_S, SRV_BATCH_MAX, SRV_FLOP_Q, SRV_BYTES_BATCH = 0, 1, 2, 3, 4, 5
SRV_BYTES_Q, SRV_FLOPS, SRV_BW, SRV_MEM_RES, SRV_OVERLAP = 6, 7, 8, 9, 10
# LLM clients of a mist_jsq pool: the flag (input), and the end of the step in flight (state the
# loop writes: MIST counts a step's load while it runs)
SRV_MIST_JSQ = 11
SRV_MIST_STEP_END = 12
N_SRV = 13
# ---- simulation settings ---------------------------------------------------------------------------
G_HORIZON, G_MAX_SIM, G_DRAIN, G_CONC, G_THINK, G_LOG_CAP, G_HASH_BLOCK = 0, 1, 2, 3, 4, 5, 6
G_DECODE_RUNS = 7  # 1: repeated decode-only steps are advanced in runs (phase 4); 0: one by one (tests)
N_G = 8
# ---- per-client statistics -------------------------------------------------------------------------
CS_BUSY, CS_STEPS, CS_BATCH_TOKENS, CS_BATCH_SEQS, CS_KV_PEAK, CS_KV_BLOCK_S, CS_PREEMPT, CS_RECOMP = range(8)
CS_TC, CS_TM, CS_TN, CS_FLOPS, CS_BYTES, CS_PF_TOKENS, CS_DEC_TOKENS, CS_OUT_OF_RANGE, CS_SERVED = range(8, 17)
CS_RUN_STEPS = 17  # steps advanced inside decode runs (a subset of CS_STEPS)
CS_RUN_LEAVES = 18  # requests that emitted their last token and left inside a decode run
# MIST metric definitions (metrics = "mist"): sum over steps of the decoding requests, of decoding
# requests x step duration, and the latest start of a step at whose end a request finished
CS_DEC_SEQS = 19
CS_DEC_SEQ_S = 20
CS_FINISH_STEP_START = 21
CS_KV_BLOCKED_S = 22  # prefill client: s finished prefills waited for KV room on their decode client
N_CS = 23
# ---- request state columns ---------------------------------------------------------------------------
Q_CUR, Q_PF_TARGET, Q_COMPUTED, Q_GEN, Q_BLOCKS, Q_HIT, Q_FETCHED, Q_PROMPT, Q_OUT = range(9)
Q_IN_STEP, Q_WNEXT, Q_WPREV, Q_INSERTED, Q_PENDING = 9, 10, 11, 12, 13
# KV backpressure: blocks held on the prefill client (and which client), blocks reserved on the decode client
Q_HELD, Q_HELD_C, Q_RESV = 14, 15, 16
# PP micro-batching: 1 while the request is in a micro-batch in flight (kernels/ppipe.py)
Q_MB = 17
N_Q = 18
# ---- client state columns ------------------------------------------------------------------------------
I_WHEAD, I_WTAIL, I_WCOUNT, I_NRUN, I_USED, I_NPF, I_NDEC, I_NREAL, I_PFTOK = range(9)
I_NSTATIC, I_PEND_PF, I_NDEC_C, I_NREQ, I_BPHASE, I_DIRTY, I_RR, I_RR2 = range(9, 17)
# MIST token load (mist_jsq pools): flag, load of the step in flight, load that arrived since it began
I_MIST, I_MIST_STEP, I_MIST_Q = 17, 18, 19
# KV backpressure: the FIFO of requests waiting to reserve KV blocks here (linked through Q_WNEXT)
I_RHEAD, I_RTAIL, I_RCOUNT = 20, 21, 22
# PP micro-batching: micro-batches in flight and the ring slot of the oldest (kernels/ppipe.py)
# and the requests in them (max_batch_size bounds each micro-batch: requests in flight do not count)
I_MB_N, I_MB_HEAD, I_MB_REQS = 23, 24, 25
# 1: a request was admitted with its prompt already computed (a decode-only arrival), which may
# complete its stage without being in a step: the next step end that completes a prompt looks for
# leavers among all running requests (llm_step._llm_step_end)
I_LEAVE_CHECK = 26
# Lazy decodes (kernels/lazy.py): I_LAZY_OK 1 when this client may keep its decodes lazy (set once
# per point); I_LAZY_N the members (0: off); I_LAZY_F the members' latest formation (counted from
# the run's base); I_LAZY_DONE 1 when that step has ended; I_LAZY_FORM its formation id (C_FORM);
# the members' token rows, attention sums (query-key pairs, KV tokens read) at that formation and
# the first formation count at whose step end a member emits its last token; I_LAZY_SHARED 1 when a
# shared prefix is read once per step (steptime P_SHARED_ONCE)
I_LAZY_OK, I_LAZY_N, I_LAZY_F, I_LAZY_DONE, I_LAZY_FORM = 27, 28, 29, 30, 31
I_LAZY_W, I_LAZY_CTX, I_LAZY_READ, I_LAZY_LEFT, I_LAZY_SHARED = 32, 33, 34, 35, 36
# SGLang's admission reserve (engine.S_KV_RESERVE): decode batches since new_token_ratio was last reset
I_RESERVE_DECAYS = 37
N_I = 38
F_NEXT, F_START = 0, 1   # client float columns: end of the step in flight, its start
F_GATE = 2   # PP micro-batching: earliest start of the next micro-batch (kernels/ppipe.py)
F_LAZY_T = 3  # lazy decodes: when the members last emitted a token, s
N_F = 4
# ---- loop counters -------------------------------------------------------------------------------------
C_NFL, C_REL, C_NA, C_FORM, C_NLOG = 0, 1, 2, 3, 4
N_CTR = 5
MAX_HOPS = 4          # links on one route
LOG_COLS = N_LOG + 1   # step log: engine columns + client index
MEMO_CAP = 1 << 18   # slots of the MIST step-time memo (open addressing)
