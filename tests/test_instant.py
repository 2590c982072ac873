"""Instant commands (issue 14): what a one-off command imports, and that the shortcuts taken for
speed give the same numbers. Nothing here is timed (benchmarks/bench_cli.py measures); the
checks are on ``sys.modules`` of a fresh process and on bit-identical results."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("xarray", "pandas", "numba", "scipy", "llvmlite", "dask", "matplotlib", "netCDF4")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (this checkout first on the path); it prints JSON."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         cwd=str(ROOT), timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_LOADED = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (HEAVY,)


def test_import_mistfast_imports_nothing_heavy():
    assert _fresh("import mistfast\n" + _LOADED) == []


def test_spec_step_model_and_kernel_modules_import_without_numba():
    """Importing a kernel module defers its numba dispatchers: the spec, catalog and step-model
    code (all that ``mistfast step`` needs) runs without numba, xarray or pandas."""
    code = ("import mistfast.cli, mistfast.specs, mistfast.stepmodel, mistfast.opbreakdown, mistfast.catalog\n"
            "import mistfast.kernels.steptime, mistfast.kernels.engine, mistfast.kernels.metrics\n" + _LOADED)
    assert _fresh(code) == []


def test_step_command_runs_without_numba_and_prints_the_kernel_numbers():
    args = ["step", "--model", "llama-3.1-70b", "--device", "H100", "--tp", "8", "--prefill", "0:2048",
            "--decode", "1:1024x32"]
    code = f"""
        import io, contextlib, json, sys
        from mistfast.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                main({args!r})
            except SystemExit as e:
                assert e.code in (0, None), e.code
        print(json.dumps({{"out": buf.getvalue(), "heavy": sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))}}))
    """
    res = _fresh(code)
    assert res["heavy"] == []
    # the printed latency is the compiled kernel's (same source, bit-identical: see below)
    from mistfast.specs import make_client
    from mistfast.stepmodel import step_latency
    ref = step_latency(make_client("llama-3.1-70b", "H100", tp=8), prefill=[(0, 2048)], decode=[(1, 1024)] * 32)
    assert f"{ref.total_s * 1e3:.4f} ms" in res["out"].splitlines()[1]


@pytest.mark.parametrize("example", ["single_client.toml", "rag.toml"])
def test_run_command_loads_no_xarray_pandas_or_scipy_linalg(example):
    """A plain ``mistfast run`` (no -o, --per-request, --trace) of a scenario or a multi-stage
    pipeline needs numba (or a kernel image) but never builds a Dataset, and numba's BLAS check is satisfied without
    importing the scipy.linalg package."""
    scen = ROOT / "examples" / example
    if not scen.exists():
        pytest.skip(f"examples/{example} not in this checkout")
    code = f"""
        import io, contextlib, json, sys
        from mistfast.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                main(["run", {str(scen)!r}])
            except SystemExit as e:
                assert e.code in (0, None), e.code
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ("xarray", "pandas", "numba", "scipy",
                                                                              "llvmlite") and m.count('.') <= 1)))
    """
    loaded = _fresh(code)
    assert "numba" in loaded or "llvmlite" in loaded  # numba, or a kernel image (llvmlite's JIT)
    assert not {"xarray", "pandas", "scipy.linalg", "scipy.stats", "scipy.optimize"} & set(loaded), loaded


@pytest.mark.parametrize("kw", [dict(model="llama-3.1-8b", device="H100"),
                                dict(model="llama-3.1-70b", device="H100", tp=8, pp=2),
                                dict(model="mixtral-8x7b", device="H100", tp=2, ep=2),
                                dict(model="deepseek-v3", device="H200", tp=8, precision="fp8"),
                                dict(model="llama-3.1-8b", device="H100-genz", reference="genz")],
                         ids=lambda kw: f"{kw['model']}-{kw['device']}")
def test_step_without_kernels_is_bit_identical_to_the_compiled_kernel(kw):
    """``mistfast step`` runs the kernel's Python source instead of loading the compiled kernel:
    every number must be exactly (not approximately) the compiled one."""
    from mistfast.opbreakdown import step_latency_python
    from mistfast.specs import make_client
    from mistfast.stepmodel import step_latency
    c = make_client(**kw)
    rng = np.random.default_rng(14)
    for _ in range(15):
        pf = [(int(rng.integers(0, 8000)), int(rng.integers(1, 4096))) for _ in range(rng.integers(0, 4))]
        dec = [(int(rng.integers(1, 3)), int(rng.integers(1, 16000))) for _ in range(rng.integers(0 if pf else 1, 64))]
        ref = step_latency(c, prefill=pf, decode=dec)
        py = step_latency_python(c, prefill=pf, decode=dec)
        assert py.total_s == ref.total_s
        assert py.breakdown == ref.breakdown


# ----------------------------------------------------------------------------- deferred kernels
def test_deferred_kernels_become_dispatchers_on_first_use():
    """Before the first call a kernel is a DeferredKernel (no numba). With light loading the first
    call makes only that kernel's dispatcher (a command loads one or two entry points); making all
    of them (as before any compile) swaps every dispatcher into the package's modules, including
    names imported from another kernel module, so compiled callers only ever see dispatchers."""
    code = """
        import json, os, sys
        os.environ["MISTFAST_KERNEL_IMAGES"] = "0"   # through numba's dispatchers (images: below)
        import numpy as np
        from mistfast import _numba as NB
        from mistfast.kernels import steptime as ST, engine as E
        import mistfast.kernels.metrics as M
        held = ST.step_time                       # a reference taken before
        before = [type(ST.step_time).__name__, "numba" in sys.modules, callable(held.py_func)]
        from mistfast.specs import make_client
        from mistfast.stepmodel import step_latency, client_params
        lat = step_latency(make_client("llama-3.1-8b", "H100"), prefill=[(0, 512)])   # first call
        from numba.core.dispatcher import Dispatcher
        made = sum(k._dispatcher is not None for k in NB._DEFERRED)
        first = isinstance(held._dispatcher, Dispatcher)
        NB.ensure_compiled_kernels()
        kernels = [v for mod in (ST, E, M) for v in vars(mod).values()
                   if isinstance(v, (Dispatcher, NB.DeferredKernel))]
        after = [isinstance(v, Dispatcher) for v in kernels]
        # the old reference forwards to the same dispatcher
        print(json.dumps({"before": before, "n": len(kernels), "after": all(after), "first": first,
                          "made": made, "light": NB.CACHE and NB.LIGHT_LOAD,
                          "same": held._dispatcher is ST.step_time, "py": held.py_func is ST.step_time.py_func,
                          "scipy_linalg": "scipy.linalg" in sys.modules}))
    """
    res = _fresh(code)
    assert res["before"] == ["DeferredKernel", False, True]
    assert res["first"]
    if res["light"]:
        assert res["made"] == 1
    assert res["n"] > 10 and res["after"] and res["same"] and res["py"]
    assert res["scipy_linalg"] is False


def test_a_lightly_loaded_kernel_links_into_a_later_compile():
    """Light loading leaves a cached kernel's linking bitcode unparsed; a function compiled later
    in the same process that calls the kernel must still link it and get the kernel's numbers."""
    code = """
        import json, os
        os.environ["MISTFAST_KERNEL_IMAGES"] = "0"   # through numba's dispatchers (images: below)
        import numba
        import numpy as np
        from mistfast import _numba as NB
        from mistfast.kernels import steptime as ST
        from mistfast.specs import make_client
        from mistfast.stepmodel import step_latency
        c = make_client("llama-3.1-8b", "H100")
        from mistfast.stepmodel import client_params
        ref = step_latency(c, prefill=[(0, 512)]).total_s          # loads step_time lightly
        lib = ST.step_time.overloads[ST.step_time.signatures[0]].library
        lazy = type(lib).__name__
        step_time = ST.step_time

        @numba.njit
        def twice(prm, past, new, n, done, br, sh, kv, nd, out):
            return step_time(prm, past, new, n, done, br, sh, kv, nd, out) + \
                step_time(prm, past, new, n, done, br, sh, kv, nd, out)
        e = np.zeros(0)
        out = twice(client_params(c), np.zeros(1), np.full(1, 512.0), 1, 1.0, e, e, e, 0, np.zeros(ST.N_OUT))
        print(json.dumps({"lazy": lazy, "light": NB.CACHE and NB.LIGHT_LOAD, "ref": ref, "out": out}))
    """
    res = _fresh(code)
    assert res["ref"] > 0 and res["out"] == 2 * res["ref"]
    if res["light"]:
        assert res["lazy"] == "LazyLinkingLibrary"


def test_deferred_kernel_pickles_by_reference_and_keeps_its_name():
    from mistfast.kernels import cluster, steptime
    for k in (steptime.step_time, cluster.simulate_points_serial, cluster.simulate_points):
        assert pickle.loads(pickle.dumps(k)) is getattr(sys.modules[k.__module__],
                                                         [n for n, v in vars(sys.modules[k.__module__]).items()
                                                          if v is k][0])
    assert steptime.step_time.__name__ == "step_time" and steptime.step_time.__doc__ == steptime.step_time.py_func.__doc__


def test_numba_blas_check_without_scipy_linalg_leaves_scipy_usable():
    """After the kernels are set up without importing scipy.linalg, scipy.linalg imports normally
    (cython_blas attached to it) and numba still compiles BLAS/LAPACK calls."""
    code = """
        import json, sys
        from mistfast import _numba as NB
        import mistfast.kernels.steptime
        NB.ensure_compiled_kernels()
        NB._check_blas_without_scipy_linalg()   # what runs before numba sets up its registries
        skipped = "scipy.linalg" not in sys.modules and "scipy.linalg.cython_blas" not in sys.modules
        from numba.np.arraymath import _HAVE_BLAS
        import numba, numpy as np
        import scipy.linalg.cython_blas
        import scipy.linalg
        attached = scipy.linalg.cython_blas is sys.modules["scipy.linalg.cython_blas"]
        f = numba.njit(cache=False)(lambda a: np.dot(a, a))
        a = np.array([[1.0, 2.0], [3.0, 4.0]])
        print(json.dumps({"skipped": skipped, "blas": bool(_HAVE_BLAS), "attached": attached,
                          "dot": f(a).tolist(), "inv": scipy.linalg.inv(a).tolist()}))
    """
    res = _fresh(code)
    assert res["skipped"] and res["blas"] and res["attached"]
    assert res["dot"] == [[7.0, 10.0], [15.0, 22.0]]
    assert np.allclose(res["inv"], [[-2.0, 1.0], [1.5, -0.5]])


# ----------------------------------------------------------------------------- light cache loading
def _run_output(example: str, light: str, images: str = "0") -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1", MISTFAST_NUMBA_LIGHT_LOAD=light,
               MISTFAST_KERNEL_IMAGES=images)
    out = subprocess.run([sys.executable, "-m", "mistfast.cli", "run", str(ROOT / "examples" / example)],
                         env=env, capture_output=True, text=True, cwd=str(ROOT), timeout=900)
    assert out.returncode == 0, out.stderr
    return [ln for ln in out.stdout.splitlines() if not ln.startswith("simulated in")]


@pytest.mark.parametrize("example", ["single_client.toml", "rag.toml"])
def test_light_cache_loading_gives_the_same_results_as_numbas_own(example):
    """Cached kernels loaded without numba's registry refresh run the same machine code: a fresh
    ``mistfast run`` prints the same numbers either way (and does not crash on a missing symbol)."""
    if not (ROOT / "examples" / example).exists():
        pytest.skip(f"examples/{example} not in this checkout")
    light = _run_output(example, "1")
    assert light == _run_output(example, "0")
    assert any(ln.startswith("TTFT ms") for ln in light)


def test_light_loading_is_used_and_parallel_kernels_load_with_it():
    """In a fresh process the kernels' caches load lightly, and the parallel sweep kernel (which
    starts numba's thread pool when loaded) gives the serial kernel's results."""
    code = """
        import json
        import numpy as np
        from mistfast import _numba as NB
        from mistfast.kernels import cluster as CL
        from mistfast.runner import run_points
        from mistfast.scenario import point_seed, scenario_point
        from mistfast.specs import parse_scenario
        pts = [scenario_point(parse_scenario({"workload": {"num_requests": 80, "arrival": {"rate_rps": r}}}),
                              point_seed(7, i)) for i, r in enumerate((2.0, 9.0))]
        par = run_points(pts, parallel=True)["summary"]
        ser = run_points(pts, parallel=False)["summary"]
        same = all(np.array_equal(np.asarray(par[k]), np.asarray(ser[k]), equal_nan=True) for k in ser)
        print(json.dumps({"light": type(CL.simulate_points._cache).__name__, "same": same,
                          "hits": sum(CL.simulate_points_serial._cache_hits.values()) +
                                  sum(CL.simulate_points._cache_hits.values())}))
    """
    res = _fresh(code)
    assert res["light"] == "LightLoadingCache"
    assert res["same"]


def test_numba_internals_patches_apply_only_on_the_verified_numba_version():
    # the version is read from numba's _version.py without importing numba; it must agree with
    # numba's own, and the two speed-ups that reach into numba internals follow it
    import numba

    from mistfast import _numba as N
    assert N._numba_internals_verified() == numba.__version__.startswith(N.VERIFIED_NUMBA)
    if not N._VERIFIED:
        assert not N.LIGHT_LOAD and not N.LINEAR_INLINE_COPY


# ----------------------------------------------------------------------------- kernel images
_NUMBA_LOADED = ("import json, sys; print(json.dumps(sorted(m for m in sys.modules "
                 "if m == 'numba' or m.startswith('numba.'))))")


@pytest.mark.parametrize("example", ["single_client.toml", "rag.toml"])
def test_kernel_images_run_without_numba_and_print_the_same_numbers(example):
    """After one run has loaded the kernels through numba (which writes their images), a fresh
    ``mistfast run`` calls the cached machine code without importing numba (only three of numba's
    C extension modules, and llvmlite) and prints exactly what numba's own loading prints."""
    scen = ROOT / "examples" / example
    if not scen.exists():
        pytest.skip(f"examples/{example} not in this checkout")
    from mistfast import _numba as NB
    if not (NB.CACHE and NB.LIGHT_LOAD and NB.IMAGES):
        pytest.skip("kernel images need numba's cache, light loading (numba 0.68) and MISTFAST_KERNEL_IMAGES")
    reference = _run_output(example, "0", images="0")   # numba's own loading, no images
    _run_output(example, "1", images="1")                # loads through numba once: writes the images
    assert _run_output(example, "1", images="1") == reference
    code = f"""
        import io, contextlib
        from mistfast.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                main(["run", {str(scen)!r}])
            except SystemExit as e:
                assert e.code in (0, None), e.code
    """
    loaded = _fresh(textwrap.dedent(code) + _NUMBA_LOADED)
    assert loaded == []   # numba's C extension modules are loaded but not registered as numba's


def test_numba_works_after_a_kernel_image_ran_in_the_same_process():
    """An image loads numba's C extension modules on their own; numba imported afterwards must
    use them as its own, load the same kernels through its dispatchers with the same results,
    and compile new functions."""
    scen = ROOT / "examples" / "single_client.toml"
    if not scen.exists():
        pytest.skip("examples/single_client.toml not in this checkout")
    code = f"""
        import json, sys
        import numpy as np
        from mistfast import quickrun as Q
        from mistfast.specs import load_scenario
        sc = load_scenario({str(scen)!r}, {{}})
        Q.summary_of(Q._tiny(sc))                      # writes images if numba loaded the kernels
        a = Q.summary_of(sc)
        before = "numba" in sys.modules
        import numba
        from mistfast import _numba as NB
        NB.ensure_compiled_kernels()                   # dispatchers from now on
        b = Q.summary_of(sc)
        same = all(np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True) for k in a)

        @numba.njit
        def total(n):
            return np.arange(n).sum()
        from mistfast import _kernel_image as KI
        rt = KI._RUNTIME or {{}}
        shared = all(rt[k].c_helpers == m.c_helpers for k, m in (("helperlib", numba._helperlib),
                                                                  ("dynfunc", numba._dynfunc)) if k in rt)
        print(json.dumps({{"same": same, "n": len(a), "compiled": int(total(10)), "helperlib_shared": shared,
                          "image": before is False}}))
    """
    res = _fresh(code)
    assert res["same"] and res["n"] > 20 and res["compiled"] == 45 and res["helperlib_shared"]
    from mistfast import _numba as NB
    if NB.CACHE and NB.LIGHT_LOAD and NB.IMAGES:
        assert res["image"]   # the first summaries came from images (numba was not imported)


def test_kernel_image_argument_types_follow_numbas_typing():
    """An image is called only with arguments of exactly the compiled types; the types are read
    the way numba's typeof reads them (layout from contiguity, 1-d arrays are C, read-only arrays
    and other dtypes differ, Python int/float are int64/float64)."""
    from mistfast._kernel_image import arg_type
    a = np.zeros((3, 4))
    assert arg_type(a) == ("array", "<f8", 2, "C", False, True)
    assert arg_type(np.asfortranarray(a))[3] == "F"
    assert arg_type(a[:, ::2])[3] == "A"
    assert arg_type(np.zeros(5, np.int8)) == ("array", "|i1", 1, "C", False, True)
    ro = np.zeros(2)
    ro.flags.writeable = False
    assert arg_type(ro)[4] is True
    assert arg_type(3) == ("int64",) and arg_type(np.int64(3)) == ("int64",) and arg_type(np.int32(3)) is None
    assert arg_type(2.5) == ("float64",) and arg_type(np.float32(2.5)) is None
    assert arg_type(True) == ("bool",) and arg_type(2**70) is None and arg_type("x") is None
    numba_typeof = pytest.importorskip("numba").typeof
    from mistfast._kernel_image import _numba_arg_type
    for value in (a, np.asfortranarray(a), a[:, ::2], np.zeros(5, np.int8), ro, 3, 2.5, True, np.int64(4)):
        assert _numba_arg_type(numba_typeof(value)) == arg_type(value), value


def test_an_image_that_does_not_match_is_not_used(tmp_path):
    """No image for these argument types, or an image written for another machine or numba: the
    call goes through numba (the caller gets ``(False, None)``)."""
    from mistfast import _kernel_image as KI
    args = (np.zeros(3), 1.0)
    assert KI.call(str(tmp_path), "mistfast.kernels.x", "k", args) == (False, None)
    path = KI.image_path(tmp_path, "mistfast.kernels.x", "k", [KI.arg_type(a) for a in args])
    path.write_bytes(pickle.dumps(dict(format=KI.FORMAT, host=("another", "cpu"), arg_types=[KI.arg_type(a) for a in args])))
    assert KI.call(str(tmp_path), "mistfast.kernels.x", "k", args) == (False, None)


# ----------------------------------------------------------------------------- quick commands
@pytest.mark.parametrize("argv", [["--help"], ["catalog", "models"], ["catalog", "devices"], ["run", "--help"],
                                  ["--version"]])
def test_quick_commands_import_no_pydantic_numba_or_xarray(argv):
    code = f"""
        import io, contextlib, json, sys
        from mistfast.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main({argv!r})
            except SystemExit as e:
                assert e.code in (0, None), e.code
        print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} &
                                {{"pydantic", "pydantic_core", "numba", "llvmlite", "xarray", "pandas", "scipy", "dask"}})))
    """
    assert _fresh(code) == []


@pytest.mark.parametrize("example", ["single_client.toml", "rag.toml", "pd_disaggregation.toml"])
def test_quick_summary_is_the_datasets_summary(example):
    """``mistfast run`` without -o prints a summary built from the kernels' arrays; with -o it is
    built from the Dataset: the text must be identical, and every number equal to the Dataset's."""
    from mistfast.quickrun import timed_summary
    from mistfast.scenario import simulate
    from mistfast.specs import load_scenario
    from mistfast.summary_text import format_summary
    scen = ROOT / "examples" / example
    if not scen.exists():
        pytest.skip(f"examples/{example} not in this checkout")
    sc = load_scenario(str(scen), {})
    quick, _, _ = timed_summary(sc)
    ds = simulate(sc)
    assert format_summary(quick, sc.metrics.quantiles or None) == format_summary(ds, sc.metrics.quantiles or None)
    for name, value in quick.items():
        if name in ds and ds[name].ndim == np.ndim(value):
            assert np.array_equal(np.asarray(ds[name].values, float), np.asarray(value, float), equal_nan=True), name


# ----------------------------------------------------------------------------- parsed TOML copies
def test_toml_copies_give_the_parsed_file_and_never_a_stale_one(tmp_path, monkeypatch):
    from mistfast import tomlcache
    from mistfast.catalog import data_dir, tomllib
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("calibration.toml", "devices.toml", "models.toml"):
        path = data_dir() / name
        with open(path, "rb") as f:
            ref = tomllib.load(f)
        assert tomlcache.load_toml(path) == ref          # parsed, copy written
        assert tomlcache.load_toml(path) == ref          # from the copy
    assert len(list((tmp_path / "cache" / "mistfast" / "toml").glob("*.marshal"))) == 3
    f = tmp_path / "x.toml"
    f.write_text("a = 1\n[t]\nb = [1.5, 'x']\n")
    assert tomlcache.load_toml(f) == {"a": 1, "t": {"b": [1.5, "x"]}}
    f.write_text("a = 2\n")                                # same size class, new content: new copy
    assert tomlcache.load_toml(f) == {"a": 2}
    for copy in (tmp_path / "cache" / "mistfast" / "toml").glob("*.marshal"):
        copy.write_bytes(b"\x00damaged")                   # a damaged copy: parsed again
    assert tomlcache.load_toml(f) == {"a": 2}
    f.write_text("d = 2024-01-02\n")                       # dates: marshal cannot hold them, no copy
    assert str(tomlcache.load_toml(f)["d"]) == "2024-01-02"
    f.write_text("a = [\n")
    with pytest.raises(tomllib.TOMLDecodeError):
        tomlcache.load_toml(f)


def test_a_compiled_kernel_is_saved_as_an_image_and_runs_without_numba(tmp_path):
    """The process that compiles a kernel also writes its image; the next process runs the
    kernel from the image (no numba module imported) with the same result."""
    from mistfast import _numba as NB
    if not (NB.CACHE and NB.LIGHT_LOAD and NB.IMAGES):
        pytest.skip("kernel images need numba's cache, light loading (numba 0.68) and MISTFAST_KERNEL_IMAGES")
    (tmp_path / "tinykernel.py").write_text(textwrap.dedent("""
        from mistfast._numba import jit

        @jit
        def scale(x, factor, out):
            for i in range(x.shape[0]):
                out[i] = factor * x[i] + 0.5
            return out.sum()
    """))
    code = f"""
        import json, os, sys
        os.environ["NUMBA_CACHE_DIR"] = {str(tmp_path / "cache")!r}
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        from mistfast import _numba as NB
        import tinykernel
        out = np.zeros(5)
        total = tinykernel.scale(np.arange(5.0), 3.0, out)
        print(json.dumps({{"total": float(total), "out": out.tolist(), "numba": "numba" in sys.modules,
                          "images": sorted(p for p in os.listdir(NB._CACHE_DIR) if p.endswith(".mfimage"))}}))
    """
    first = _fresh(code)      # compiles (numba), writes the image
    second = _fresh(code)     # the image
    assert first["numba"] and not second["numba"]
    assert [i for i in first["images"] if i.startswith("tinykernel.scale-")]
    assert second["out"] == first["out"] == [0.5, 3.5, 6.5, 9.5, 12.5] and second["total"] == first["total"] == 32.5


def test_a_kernel_called_often_switches_from_its_image_to_numba():
    """Images check argument types in Python (slower per call than numba's dispatch): after
    CALL_LIMIT calls a kernel goes through numba, with the same results."""
    code = """
        import json, sys
        import numpy as np
        from mistfast import _kernel_image as KI
        from mistfast.kernels import steptime as ST
        from mistfast.specs import make_client
        from mistfast.stepmodel import client_params
        KI.CALL_LIMIT = 3
        prm = client_params(make_client("llama-3.1-8b", "H100"))
        e = np.zeros(0)
        outs, numba_loaded = [], []
        for k in range(6):
            outs.append(float(ST.step_time(prm, np.zeros(1), np.full(1, 512.0), 1, 1.0, e, e, e, 0, np.zeros(ST.N_OUT))))
            numba_loaded.append("numba" in sys.modules)
        print(json.dumps({"outs": outs, "numba": numba_loaded}))
    """
    res = _fresh(code)
    assert len(set(res["outs"])) == 1 and res["outs"][0] > 0
    assert res["numba"][-1]
    from mistfast import _numba as NB
    if NB.CACHE and NB.LIGHT_LOAD and NB.IMAGES:
        assert res["numba"][:3] == [False, False, False]   # the image served the first calls
