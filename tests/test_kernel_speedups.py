"""The arithmetic shortcuts of the kernels' hot paths (docs/kernels.md, "Per-point speed") give what
the plain formulas give. The engine as a whole is checked bit for bit against its reference twin
(tests/test_engine_reference.py); these tests pin the identities the shortcuts rest on, over
ranges wider than any simulation reaches."""
import numpy as np

from mistfast.kernels import decode_run, engine


def _py(fn):
    return getattr(fn, "py_func", fn)


def test_ring_slot_is_python_modulo():
    ring_slot = _py(decode_run._ring_slot)
    for b in (1, 2, 3, 16, 17, 32, 256):
        for j in range(-3 * b - 2, 4 * b + 3):
            assert ring_slot(j, b) == j % b, (j, b)


def test_ring_slot_counter_follows_j_mod_b():
    # the decode run keeps j % b as a counter: j_slot <- j_slot + 1, wrapping at b
    for b in (1, 2, 5, 16):
        j_slot = 0
        for j in range(1, 5 * b):
            j_slot = j_slot + 1 if j_slot + 1 < b else 0
            assert j_slot == j % b


def test_decode_fits_held_blocks_without_division():
    # _place_running_decodes: a single-branch decode needs no new block exactly when its context
    # (uncached prompt + generated tokens) fits the blocks it holds: pu + g <= held * b
    blocks_for = _py(engine._blocks_for)
    rng = np.random.default_rng(7)
    for _ in range(20000):
        b = int(rng.choice([1, 2, 8, 16, 32, 128]))
        pu = int(rng.integers(0, 5000))
        g = int(rng.integers(0, 3000))
        held = int(rng.integers(0, (pu + g) // b + 3))
        need = blocks_for(pu, g, 1, b) - held
        assert (need <= 0) == (pu + g <= held * b), (pu, g, held, b)


def _memo_cases():
    """(client name, prm) for a dense model and one with windowed attention layers."""
    from mistfast import stepmodel
    from mistfast.specs import make_client
    return [(name, stepmodel.client_params(make_client(name, dev, efficiency={})))
            for name, dev in (("llama-3.1-8b", "H100"), ("gpt-oss-20b", "B200"))]


def _step(ST, prm, out, shape):
    """One step_time call for a batch shape (prefill chunks, decodes) into ``out``."""
    pf, dec = shape
    pf = np.asarray(pf, float).reshape(-1, 2)
    dec = np.asarray(dec, float).reshape(-1, 3)
    dt = ST.step_time(prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(len(pf)),
                      dec[:, 0].copy(), dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)
    return dt, out[:ST.N_BREAKDOWN].copy()


def test_step_fixed_memo_gives_the_numbers_of_a_fresh_computation():
    # the engine's breakdown buffer keeps step_fixed's part with its key; a sequence of steps of
    # two clients, repeating and alternating shapes, must cost exactly what fresh buffers cost
    from mistfast.kernels import steptime as ST
    cases = _memo_cases()
    shapes = [([], [1, 0, 100] * 8), ([], [1, 0, 101] * 8), ([512, 0], [1, 0, 100] * 7),
              ([], [1, 0, 100] * 8), ([256, 256, 0, 128], []), ([], [1, 0, 300] * 3)]
    memo = np.zeros(ST.N_OUT)
    memo[ST.X_MEMO] = 1.0
    memo[ST.X_KEY_CLIENT] = -1.0
    hits = 0
    for rnd in range(3):
        for k, shape in enumerate(shapes):
            for c, (name, prm) in enumerate(cases):
                if (rnd + k) % 2 and c == 1:
                    continue     # vary the interleaving of the two clients
                key_before = memo[ST.X_KEY_CLIENT:ST.X_KEY_TPF + 1].copy()
                memo[ST.X_CALLER] = c
                got = _step(ST, prm, memo, shape)
                want = _step(ST, prm, np.zeros(ST.N_OUT), shape)
                hits += int(key_before[0] == c and (memo[ST.X_KEY_CLIENT:ST.X_KEY_TPF + 1] == key_before).all())
                assert got[0] == want[0], (name, shape)
                assert (got[1] == want[1]).all(), (name, shape)
    assert hits > 0   # the memo was used


def test_windowed_attention_clears_the_memo_key():
    from mistfast.kernels import steptime as ST
    name, prm = _memo_cases()[1]
    assert prm[ST.P_N_WIN] > 0.0, name
    memo = np.zeros(ST.N_OUT)
    memo[ST.X_MEMO] = 1.0
    memo[ST.X_KEY_CLIENT] = -1.0
    _step(ST, prm, memo, ([], [1, 0, 500] * 4))
    assert memo[ST.X_KEY_CLIENT] == -1.0


def _pd_run_with_ids(decode_runs, chunked_decode=False):
    """The PD-disaggregation example (120 requests) through ``run_pipeline`` with a step log wide
    enough for every step's request ids: (lowered inputs, stage outputs, request outputs, log)."""
    import tomllib
    from pathlib import Path
    from mistfast.runner import run_pipeline
    from mistfast.scenario import build_requests, point_seed
    from mistfast.specs import parse_scenario
    doc = tomllib.loads((Path(__file__).resolve().parent.parent / "examples" / "pd_disaggregation.toml").read_text())
    doc["workload"]["num_requests"] = 120
    doc["workload"]["arrival"]["rate_rps"] = 6
    if chunked_decode:   # decode-only admissions placed by the admission scan itself (CHUNKED)
        doc["clients"][1]["scheduler"] = {"batching": "chunked", "chunk_size": 512, "max_batch_size": 64}
    spec = parse_scenario(doc)
    ss = point_seed(1)
    reqs = build_requests(spec.workload, spec.simulation.horizon_s, ss)
    run = run_pipeline(spec, reqs, ss, log_steps=40000, decode_runs=decode_runs, log_id_cols=len(reqs) + 1)
    assert len(run["steplog"]) < 40000
    return run["inputs"], run["stages"], run["requests"], run["steplog"]


def test_first_scheduling_of_decode_only_admissions_from_the_step_log():
    # A decode-only admission (a request whose KV arrived from a prefill client) is marked scheduled
    # by _mark_scheduled (a shortcut that skips those marks was tried, docs/kernels.md). The decode stage's
    # first scheduling time must still be the start of the first step on its client that holds
    # the request, read here from the step log's id columns (decode runs off: every step logged
    # with its ids; on: the same times)
    from mistfast.kernels import cluster as CL
    from mistfast.kernels import engine as E
    for chunked_decode in (False, True):
        ins, st, out, log = _pd_run_with_ids(decode_runs=False, chunked_decode=chunked_decode)
        first = {}
        for row in log:
            c = int(row[E.N_LOG])
            for r in row[CL.LOG_COLS:]:
                if r >= 0 and (int(r), c) not in first:
                    first[(int(r), c)] = row[E.L_T]
        off = ins["st_off"]
        checked = 0
        for r in range(len(off) - 1):
            if out["status"][r] != E.FINISHED:
                continue
            for s in range(off[r], off[r + 1]):
                if ins["st_kind"][s] == CL.K_DECODE:
                    assert st["sched"][s] == first[(r, int(st["client"][s]))], (r, s)
                    assert out["t_first_sched"][r] < st["sched"][s]   # (prefilled elsewhere first)
                    checked += 1
        assert checked >= 100
        _, st_on, out_on, _ = _pd_run_with_ids(decode_runs=True, chunked_decode=chunked_decode)
        np.testing.assert_array_equal(st_on["sched"], st["sched"])
        np.testing.assert_array_equal(out_on["t_first_sched"], out["t_first_sched"])


def _engine_buffer(ST):
    """The engine's step-time buffer as state.new_batches makes it: scratch, then the memo table."""
    buf = np.zeros(ST.N_OUT_MEMO)
    buf[ST.X_MEMO] = 1.0
    buf[ST.X_KEY_CLIENT] = -1.0
    buf[ST.N_OUT::ST.FIX_W] = -1.0
    return buf


def _memo_table_shapes():
    """Shapes that come back after others (so the one-entry memo misses and the table may hold
    them): decode-only batches of several sizes, chunked steps of a fixed token count whose decode
    count changes, prefill-only steps."""
    shapes = []
    for n_dec in (3, 8, 5, 3, 9, 8, 5, 12, 3):
        shapes.append(([], [1, 0, 100 + n_dec] * n_dec))
        shapes.append(([float(512 - n_dec), 40.0], [1, 0, 90] * n_dec))
    shapes += [([300, 0, 200, 0], []), ([], [1, 0, 120] * 8), ([300, 0, 200, 0], [])]
    return shapes


def test_step_fixed_memo_table_gives_the_numbers_of_a_fresh_computation():
    # the engine's buffer also keeps recent fixed parts in a table after its scratch (keyed by
    # client, T, R, t_pf): interleaved clients and returning shapes must cost exactly what fresh
    # buffers (memo off) cost
    from mistfast.kernels import steptime as ST
    cases = _memo_cases()
    memo = _engine_buffer(ST)
    for rnd in range(2):
        for k, shape in enumerate(_memo_table_shapes()):
            for c, (name, prm) in enumerate(cases):
                if (rnd + k) % 3 == 0 and c == 1:
                    continue
                memo[ST.X_CALLER] = c
                got = _step(ST, prm, memo, shape)
                want = _step(ST, prm, np.zeros(ST.N_OUT), shape)
                assert got[0] == want[0], (name, shape)
                assert (got[1] == want[1]).all(), (name, shape)
    keys = memo[ST.N_OUT:].reshape(ST.FIX_SLOTS, ST.FIX_W)[:, 0]
    assert (keys >= 0).sum() >= 10    # the table holds many parts


def test_step_fixed_memo_table_is_what_a_returning_key_reads():
    # proof that the table is read (so the test above covers recalls): a returning key whose entry
    # is doctored gets the doctored layer time; an entry for another client is not taken
    from mistfast.kernels import steptime as ST
    name, prm = _memo_cases()[0]
    memo = _engine_buffer(ST)
    a, b = ([], [1, 0, 100] * 4), ([], [1, 0, 100] * 6)
    memo[ST.X_CALLER] = 0
    dt_a = _step(ST, prm, memo, a)[0]
    _step(ST, prm, memo, b)               # a's part goes into the table
    entries = memo[ST.N_OUT:].reshape(ST.FIX_SLOTS, ST.FIX_W)
    held = np.flatnonzero((entries[:, 0] == 0) & (entries[:, 1] == 4.0) & (entries[:, 2] == 4.0))
    assert len(held) == 1, "a's fixed part (T = R = 4, t_pf = 0) must be in the table"
    entries[held[0], 4 + ST.X_LAYER - ST.X_BD] += 1.0   # one more second of layers
    assert _step(ST, prm, memo, a)[0] > dt_a + 0.5
    memo[ST.X_CALLER] = 1                 # the same shape for another client: computed
    assert _step(ST, prm, memo, a)[0] == dt_a
