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
