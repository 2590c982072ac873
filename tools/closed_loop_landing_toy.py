"""A toy closed-loop engine in continuous time, independent of the mistfast kernel: how much of a
closed loop's TTFT the step-boundary re-issue plus a post-hoc wait misses (docs/ttft-under-load.md,
"Closed loops in continuous time, session 13").

Step cost: dt = a + b * decodes + c * prefill tokens (ms); token budget B per step, decodes first,
then waiting prompts first come first served, chunked. C users, ~ppu prompts each, lengths uniform in
[0.8 x, x] (InferenceMAX's --random-range-ratio 0.8).

* mode 'kernel': as mistfast's kernel: a finished user's next prompt joins the very next step (the
  caller adds (1/2 + ahead) mean steps after the fact, validate.closed_loop_step_wait_ms);
* mode 'real': the next prompt reaches the engine D ms after the last token (front-end time), lands
  mid-step; with ahead = 1 the batch of step n + 1 is formed when step n starts (vLLM
  --async-scheduling), so a prompt that lands in step n is first scheduled in step n + 2.

    python tools/closed_loop_landing_toy.py C ISL OSL A B C_PER_TOKEN [AHEAD]
    python tools/closed_loop_landing_toy.py 128 8192 1024 2.5 0.05 0.0058 1
prints the median and mean TTFT (engine side, after the first wave) of: the kernel's scheme + (1/2 +
ahead) steps, the continuous-time loop, and the continuous-time loop without the step ahead + ahead
mean steps (what validate does with the landing simulated: CLOSED_LOOP_LANDING_IN_KERNEL).
"""
import numpy as np, sys
def run(C, isl, osl, a, b, c, B=8192, mode='real', ahead=1, D=20.0, ppu=10, seed=0, pf_extra=0.0):
    rng = np.random.default_rng(seed)
    N = C * ppu
    ISL = rng.integers(int(0.8*isl), isl+1, N); OSL = rng.integers(int(0.8*osl), osl+1, N)
    # requests: user i gets requests i, i+C, ...
    arr = np.full(N, np.inf); arr[:C] = 0.0
    left_pf = ISL.astype(float).copy(); gen = np.zeros(N, int); first = np.full(N, np.nan); done = np.zeros(N, bool)
    nxt = {u: u + C for u in range(C)}
    t = 0.0; running = []; waiting = []; issued = C
    sched_time_prev = 0.0   # time the step now being formed "was scheduled" (async: start of previous step)
    steps = []
    pending = list(range(C))   # arrived or future, sorted by arr
    step_start_prev = 0.0
    while True:
        # requests visible to the scheduler of this step
        cutoff = (step_start_prev if (mode == 'real' and ahead) else t)
        if mode == 'kernel': cutoff = t
        vis = [r for r in pending if arr[r] <= cutoff + 1e-9]
        for r in vis: pending.remove(r); waiting.append(r)
        if not running and not waiting:
            if not pending: break
            nt = min(arr[r] for r in pending)
            # engine idle: jump; the request is seen at its arrival (+ one step formation when async: ignore)
            t = max(t, nt); step_start_prev = t; continue
        dec = [r for r in running if left_pf[r] == 0]
        budget = B - len(dec); pf = 0; pf_list = []
        for r in list(running) + list(waiting):
            if left_pf[r] > 0 and budget > 0:
                k = min(left_pf[r], budget); budget -= k; pf += k; pf_list.append((r, k))
        for r, k in pf_list:
            if r in waiting: waiting.remove(r); running.append(r)
        dt = a + b * len(dec) + c * pf + (pf_extra if pf else 0)
        step_start_prev = t; t += dt; steps.append(dt)
        fin = []
        for r in dec:
            gen[r] += 1
            if gen[r] >= OSL[r]: fin.append(r)
        for r, k in pf_list:
            left_pf[r] -= k
            if left_pf[r] == 0: first[r] = t; gen[r] = 1
        for r in fin:
            running.remove(r); done[r] = True
            u = r % C; q = nxt[u]
            if q < N:
                arr[q] = t + (D if mode == 'real' else 0.0); pending.append(q); nxt[u] = q + C
    ttft = first - arr
    S = np.array(steps)
    return ttft, S
if __name__ == '__main__':
    C, isl, osl = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    a, b, c = [float(x) for x in sys.argv[4:7]]
    ahead = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    late = slice(C, None)   # after the first wave
    tk, S = run(C, isl, osl, a, b, c, mode='kernel')
    ms = S[len(S) // 5:].mean()
    print(f"C={C} ISL={isl} OSL={osl} mean step {ms:.2f} ms")
    print(f"  kernel scheme + {0.5 + ahead} steps : p50 {np.median(tk[late]) + (0.5 + ahead) * ms:7.1f}  mean {tk[late].mean() + (0.5 + ahead) * ms:7.1f}")
    for D in (20.0, 40.0):
        tr, _ = run(C, isl, osl, a, b, c, mode='real', D=D, ahead=ahead)
        tt, St = run(C, isl, osl, a, b, c, mode='real', D=D, ahead=0)
        mt = St[len(St) // 5:].mean()
        print(f"  D={D:3.0f}: continuous time   : p50 {np.median(tr[late]):7.1f}  mean {tr[late].mean():7.1f}")
        print(f"         landed + {ahead} step     : p50 {np.median(tt[late]) + ahead * mt:7.1f}  mean {tt[late].mean() + ahead * mt:7.1f}")
