"""Kernel images: a cached kernel's machine code run without importing numba.

Importing numba and loading a kernel from its cache costs about a quarter of a second of CPU in
every new process, most of a small ``mistfast run``. What running the loaded code needs is much
less: the machine code, numba's C helpers and NRT allocator (C extension modules that load on
their own in a millisecond), an LLVM JIT to link the code into the process (llvmlite), and the
execution environments the code refers to. When numba compiles a kernel or loads it from its
cache (:mod:`mistfast._numba_load`), that entry point is also written as an *image* next to
numba's cache file: the machine code, the argument types, the environments' constants (plain numpy
objects) and the external symbols it needs. The next process calls the image directly.

An image is used only when everything matches: the same kernel sources (images live in the
source-tagged cache directory), Python, numba and llvmlite versions, host CPU, no numba CPU
overrides, every external symbol resolvable, and arguments of exactly the compiled types (numpy
arrays of the same dtype, dimensions, layout and writeability; Python or numpy 64-bit scalars).
Otherwise the kernel goes through numba as before, so an image can only make a call faster, never
change what runs: the machine code is the bytes numba cached. ``MISTFAST_KERNEL_IMAGES=0`` turns
images off. Parallel kernels (numba's thread pool) never use images.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import threading
from pathlib import Path

FORMAT = 1
ENABLED = os.environ.get("MISTFAST_KERNEL_IMAGES", "1") not in ("0", "false", "no")
_SUFFIX = f".py{sys.version_info.major}{sys.version_info.minor}.mfimage"
_LOCK = threading.RLock()
_LOADED: dict = {}          # (folder, module, name, argument types) -> the callable, or None (numba is used)
_UNSEEN = object()
# Checking the argument types in Python costs about 10 us a call, numba's dispatch about 1 us: an
# image serves a kernel's first calls (a one-off command makes a handful), and a process calling
# it more often than this switches to numba (0.3 s to import once, then the faster dispatch).
CALL_LIMIT = 20_000
_CALLS: dict = {}
_RUNTIME: dict | None = None   # numba's C extension modules and the registered symbols


# ----------------------------------------------------------------------------- argument types
def arg_type(value):
    """numba's type of a call argument, as a plain tuple; None when images do not handle it."""
    import numpy as np
    if isinstance(value, np.ndarray):
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return ("array", value.dtype.str, value.ndim, layout, not flags.writeable, bool(flags.aligned))
    if isinstance(value, (bool, np.bool_)):
        return ("bool",)
    if isinstance(value, np.integer):
        return ("int64",) if value.dtype == np.int64 else None
    if isinstance(value, int):
        return ("int64",) if -2**63 <= value < 2**63 else None
    if isinstance(value, np.floating):
        return ("float64",) if value.dtype == np.float64 else None
    if isinstance(value, float):
        return ("float64",)
    return None


def _numba_arg_type(t):
    """The same tuple for a numba type of a compiled signature (None: not handled)."""
    from numba.core import types
    from numba.np import numpy_support
    if isinstance(t, types.Array):
        return ("array", numpy_support.as_dtype(t.dtype).str, t.ndim, t.layout, not t.mutable, bool(t.aligned))
    if t == types.boolean:
        return ("bool",)
    if t == types.int64:
        return ("int64",)
    if t == types.float64:
        return ("float64",)
    return None


# ----------------------------------------------------------------------------- versions
def _version_of(package: str) -> str | None:
    """A package's version read from its files, without importing it."""
    import importlib.util
    import re
    try:
        spec = importlib.util.find_spec(package)
        text = (Path(spec.origin).parent / "_version.py").read_text()
    except (ImportError, AttributeError, TypeError, OSError):
        return None
    m = re.search(r'"version":\s*"([^"]+)"', text) or re.search(r"version\s*=\s*['\"]([^'\"]+)['\"]", text)
    return m.group(1) if m else None


def _host() -> tuple:
    """What the machine code was compiled for: numba's CPU name and features (numba's own cache
    keys on the same), and the versions that define the code's calling conventions."""
    from llvmlite import binding as ll
    return (ll.get_process_triple(), ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten(),
            _version_of("numba"), _version_of("llvmlite"), sys.version_info[:2])


def _cpu_overridden() -> bool:
    return any(os.environ.get(k) for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT",
                                            "NUMBA_DISABLE_JIT", "NUMBA_BOUNDSCHECK"))


def image_path(cache_dir, modname: str, qualname: str, arg_types) -> Path:
    h = hashlib.sha256(repr((modname, qualname, tuple(arg_types))).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{modname}.{qualname}-{h}{_SUFFIX}"


# ----------------------------------------------------------------------------- writing
def write_image(cache_dir, libdata, fndesc, env, signature, referenced_envs) -> None:
    """Save what numba just loaded from its cache as an image (once; any problem: no image)."""
    if not (ENABLED and cache_dir) or _cpu_overridden():
        return
    try:
        name, kind, data = libdata
        arg_types = [_numba_arg_type(t) for t in signature.args]
        if kind != "object" or None in arg_types:
            return
        path = image_path(cache_dir, fndesc.modname, fndesc.qualname, arg_types)
        if path.exists():
            return
        object_code, shared_bitcode = data
        from llvmlite import binding as ll
        from numba.core.intrinsics import INTR_MATH
        module = ll.parse_bitcode(shared_bitcode)
        undefined = sorted({f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm.")}
                           | {g.name for g in module.global_variables if g.is_declaration})
        envs = [(e.env_name, e.globals.get("__name__", ""), list(e.consts)) for e in [env, *referenced_envs]]
        consts = pickle.dumps(envs, protocol=4)
        if any(m == "numba" or m.startswith("numba.") for m in _modules_needed(consts)):
            return  # constants that would import numba to unpickle
        payload = dict(format=FORMAT, host=_host(), object_code=object_code,
                       object_sha256=hashlib.sha256(object_code).hexdigest(), wrapper=fndesc.llvm_cpython_wrapper_name,
                       qualname=fndesc.qualname, modname=fndesc.modname, arg_types=arg_types, undefined=undefined,
                       envs=consts, intr_math=list(INTR_MATH))
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(pickle.dumps(payload, protocol=4))
        os.replace(tmp, path)   # atomic: a concurrent reader sees the whole image or none
    except Exception:  # an image is an optimisation: never fail the load over it
        if os.environ.get("MISTFAST_DEBUG_IMAGES"):
            raise


def _modules_needed(data: bytes) -> set[str]:
    """The modules unpickling ``data`` imports."""
    import io
    seen: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(module)
            return super().find_class(module, name)
    Recorder(io.BytesIO(data)).load()
    return seen


# ----------------------------------------------------------------------------- loading
def call(cache_dir, modname: str, qualname: str, args):
    """``(True, result)`` of calling the kernel's image with ``args``, or ``(False, None)`` when no
    usable image matches (the caller then goes through numba)."""
    if not (ENABLED and cache_dir) or "numba" in sys.modules and _numba_ready():
        return False, None
    types = tuple(arg_type(a) for a in args)
    if None in types:
        return False, None
    key = (cache_dir, modname, qualname, types)
    entry = _LOADED.get(key, _UNSEEN)
    if entry is _UNSEEN:
        with _LOCK:
            path = image_path(cache_dir, modname, qualname, types)
            entry = _load(path, list(types)) if path.exists() and not _cpu_overridden() else None
            _LOADED[key] = entry
    if entry is None:
        return False, None
    calls = _CALLS[key] = _CALLS.get(key, 0) + 1
    if calls > CALL_LIMIT:
        _LOADED[key] = None
        return False, None
    return True, entry(*args)


def _numba_ready() -> bool:
    """numba is loaded and set up in this process: its own dispatch costs nothing more."""
    return "numba.core.dispatcher" in sys.modules and "numba.core.runtime.nrt" in sys.modules


def _load(path: Path, arg_types):
    try:
        payload = pickle.loads(path.read_bytes())
        if payload.get("format") != FORMAT or payload["arg_types"] != arg_types or payload["host"] != _host():
            return None
        if hashlib.sha256(payload["object_code"]).hexdigest() != payload["object_sha256"]:
            return None   # damaged: LLVM would abort the process on a malformed object file
        runtime = _runtime(payload["intr_math"])
        from llvmlite import binding as ll
        engine = _engine()  # (making the first engine makes the process's own symbols visible)
        if any(not ll.address_of_symbol(s) for s in payload["undefined"]):
            return None   # a symbol numba would provide that this loader does not: numba's path
        engine.add_object_file(ll.ObjectFileRef.from_data(payload["object_code"]))
        engine.finalize_object()   # relocated and linked into this process
        fnptr = engine.get_function_address(payload["wrapper"])
        if not fnptr:
            return None
        envs = []
        for env_name, modname, consts in pickle.loads(payload["envs"]):
            module = sys.modules.get(modname)
            env = runtime["dynfunc"].Environment(vars(module) if module is not None else {"__name__": modname})
            env.consts[:] = consts
            envs.append(env)
            address = engine.get_global_value_address(env_name)
            if address:
                import ctypes
                ctypes.c_void_p.from_address(address).value = id(env)
        import types as pytypes
        owner = sys.modules.get(payload["modname"]) or pytypes.ModuleType(payload["modname"])
        return runtime["dynfunc"].make_function(owner, payload["qualname"].split(".")[-1],
                                                f"image of {payload['qualname']}", fnptr, envs[0],
                                                (engine, envs))
    except Exception:
        if os.environ.get("MISTFAST_DEBUG_IMAGES"):
            raise
        return None


def _engine():
    """An empty LLVM JIT engine for this host."""
    from llvmlite import binding as ll
    target = ll.Target.from_default_triple()
    machine = target.create_target_machine(cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(),
                                           codemodel="jitdefault")
    module = ll.parse_assembly("")
    module.triple = ll.get_process_triple()
    return ll.create_mcjit_compiler(module, machine)


def _extension(name: str, relative: str):
    """One of numba's C extension modules, loaded alone (its package ``__init__`` would import
    all of numba). It is not put in ``sys.modules``: numba imported later loads it as usual, and
    Python hands it the same initialised extension (single-phase C modules are initialised once
    per process), so the C state (NRT allocator, helpers) is shared."""
    if name in sys.modules:
        return sys.modules[name]
    import importlib.machinery as M
    import importlib.util
    spec = importlib.util.find_spec("numba")
    folder = Path(spec.origin).parent / relative
    finder = M.FileFinder(str(folder), (M.ExtensionFileLoader, M.EXTENSION_SUFFIXES))
    ext = finder.find_spec(name)
    if ext is None:
        raise ImportError(name)
    module = importlib.util.module_from_spec(ext)   # (Python registers it in sys.modules)
    ext.loader.exec_module(module)
    sys.modules.pop(name, None)
    return module


def _runtime(intr_math):
    """Register the symbols numba registers for running compiled code (``numba.core.base``
    ``_load_global_helpers``, ``externals``, ``runtime.nrt``), once per process."""
    global _RUNTIME
    if _RUNTIME is None:
        import builtins

        from llvmlite import binding as ll
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        helperlib = _extension("numba._helperlib", "")
        dynfunc = _extension("numba._dynfunc", "")
        nrt = _extension("numba.core.runtime._nrt_python", "core/runtime")
        ll.add_symbol("_Py_NoneStruct", id(None))
        for helpers in (helperlib.c_helpers, dynfunc.c_helpers):
            for py_name, address in helpers.items():
                ll.add_symbol("numba_" + py_name, address)
        for obj in vars(builtins).values():
            if isinstance(obj, type) and issubclass(obj, BaseException):
                ll.add_symbol(f"PyExc_{obj.__name__}", id(obj))
        for fname in intr_math:
            ll.add_symbol(fname, helperlib.c_helpers[fname])
        for py_name, address in nrt.c_helpers.items():
            ll.add_symbol(py_name if py_name.startswith("_") else "NRT_" + py_name, address)
        nrt.memsys_use_cpython_allocator()
        _RUNTIME = {"dynfunc": dynfunc, "nrt": nrt, "helperlib": helperlib}
    return _RUNTIME
