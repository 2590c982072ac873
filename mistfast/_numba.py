"""The one place that decides numba options for every kernel.

``cache=True`` keeps a second process from recompiling. The cache lives in a directory named
after a hash of every kernel source (see ``kernel_cache_dir``), under the standard
``NUMBA_CACHE_DIR`` when it is set (e.g. node-local disk for cluster workers on a shared
filesystem); ``MISTFAST_NUMBA_CACHE=0`` switches it off.
``fastmath`` stays off: results must be bit-identical across runs and schedulers.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
import sys
import threading
from pathlib import Path


def _env_on(name: str, default: str = "0") -> bool:
    """A MISTFAST_* switch: on unless it is "0", "false" or "no"."""
    return os.environ.get(name, default) not in ("0", "false", "no")


CACHE = _env_on("MISTFAST_NUMBA_CACHE", "1")


def _numba_internals_verified() -> bool:
    """The two speed-ups below reach into numba internals; they were checked (bit-identical results,
    tests/test_instant.py, tests/test_kernel_views.py) on numba 0.68 only. Another numba version
    gets numba's own behaviour, slower but safe. Read from numba's _version.py without importing
    numba (importlib.metadata alone would cost 35 ms of the instant commands)."""
    import importlib.util
    import re
    try:
        spec = importlib.util.find_spec("numba")
        text = (Path(spec.origin).parent / "_version.py").read_text()
    except (ImportError, AttributeError, TypeError, OSError):
        return False
    m = re.search(r'"version":\s*"([^"]+)"', text)
    return bool(m) and m.group(1).startswith(VERIFIED_NUMBA)


VERIFIED_NUMBA = "0.68."
_VERIFIED = _numba_internals_verified()
# load cached kernels without numba's full registry refresh (see _light_loading_cache)
LIGHT_LOAD = _VERIFIED and _env_on("MISTFAST_NUMBA_LIGHT_LOAD", "1")


def kernel_source_tag(files) -> str:
    """Hash of the kernel sources: numba checks only the file of the function it loads, so after
    an edit of a callee in another module (steptime.py for the event loop) it would load the old
    compiled code. One cache directory per version of the sources rules that out."""
    h = hashlib.sha256()
    for f in sorted((Path(x) for x in files), key=lambda p: p.name):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return "src-" + h.hexdigest()[:16]


def _wrapperless() -> bool:
    """Internal kernels without CPython and C wrappers (the default; ``MISTFAST_NUMBA_INTERNAL=0``
    keeps them, see ``WRAPPERLESS``)."""
    return _env_on("MISTFAST_NUMBA_INTERNAL", "1")


def kernel_cache_dir() -> str | None:
    """Where this version of the kernels is cached: ``$NUMBA_CACHE_DIR/mistfast/<tag>`` when that
    variable is set, else the package's ``kernels/__pycache__/<tag>``, else (a read-only install)
    ``~/.cache/mistfast/<tag>``; None when none is writable (numba then picks its own place)."""
    pkg = Path(__file__).resolve().parent
    tag = kernel_source_tag([pkg / "_numba.py", *(pkg / "kernels").glob("*.py")])
    # numba's cache index does not key on compile flags: kernels compiled with wrappers (or
    # without machine code) get a directory of their own, so a later default run never loads them
    if not _wrapperless():
        tag += "-wrapped"
    elif _env_on("MISTFAST_NUMBA_INTERNAL_NO_CODE"):
        tag += "-nocode"
    if os.environ.get("NUMBA_CACHE_DIR"):
        roots = [Path(os.environ["NUMBA_CACHE_DIR"]) / "mistfast"]
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        roots = [pkg / "kernels" / "__pycache__", home / "mistfast"]
    for root in roots:
        d = root / tag
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return str(d)
    return None


_CACHE_DIR = kernel_cache_dir() if CACHE else None
# call a cached kernel's machine code without importing numba when possible (_kernel_image.py)
IMAGES = CACHE and _env_on("MISTFAST_KERNEL_IMAGES", "1")


class DeferredKernel:
    """A kernel whose numba dispatcher is made on first use, so that importing a kernel module
    does not import numba (about a third of a second, plus its target set-up): ``mistfast step``
    and the spec and catalog code never need it. ``py_func`` is the plain Python function.

    The first call (or any other dispatcher attribute) makes the dispatchers of every deferred
    kernel at once and puts them in place of the deferred objects in the package's modules, so
    compiled code only ever sees numba dispatchers; a deferred object still held elsewhere
    forwards to its dispatcher. With light loading (the default) the first use makes only this
    kernel's dispatcher; all of them are made before anything is compiled."""

    def __init__(self, fn, options):
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self._options = options
        self._dispatcher = None

    def __call__(self, *args, **kwargs):
        if self._options.get("internal") and WRAPPERLESS:
            raise _internal_call_error(self.py_func)
        if self._dispatcher is None and IMAGES and not kwargs and not self._options.get("parallel"):
            from ._kernel_image import call   # the cached machine code without numba, if it matches
            done, result = call(_CACHE_DIR, self.__module__, self.__qualname__, args)
            if done:
                return result
        return (self._dispatcher or _materialize(self))(*args, **kwargs)

    def __getattr__(self, name):  # only for attributes not set above: the dispatcher's
        if name.startswith("__") or name in ("_dispatcher", "_options", "py_func"):
            raise AttributeError(name)
        return getattr(self._dispatcher or _materialize(self), name)

    def __reduce__(self):  # pickled by reference: the module attribute that holds it
        module = sys.modules.get(self.__module__)
        name = next((k for k, v in vars(module).items() if v is self), None) if module else None
        return (_by_reference, (self.__module__, name or self.__qualname__))

    def __repr__(self):
        return f"<mistfast kernel {self.__module__}.{self.__qualname__} ({'ready' if self._dispatcher else 'deferred'})>"


def _by_reference(module: str, qualname: str):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_LOCK = threading.RLock()
_DEFERRED: list[DeferredKernel] = []
_READY = False   # numba imported and every deferred kernel has its dispatcher


def _dispatcher(fn, options):
    """``numba.njit`` with mistfast's cache directory. numba fixes a function's cache location when
    it is decorated, so the global setting is changed only for that moment (other libraries'
    numba caches in the same process are left where numba puts them)."""
    import numba
    options = dict(options)
    if options.pop("link_only", False):
        _LINK_ONLY.add(fn)
    internal = options.pop("internal", False) and WRAPPERLESS
    if internal:   # only jitted code calls it: no Python or C entry (see _internal_kernel_class)
        options.update(no_cpython_wrapper=True, no_cfunc_wrapper=True)
        _INTERNAL.add(fn)
    _KERNELS.add(fn)
    saved = numba.config.CACHE_DIR
    if _CACHE_DIR is not None:
        numba.config.CACHE_DIR = _CACHE_DIR
    try:
        dispatcher = numba.njit(cache=CACHE, **options)(fn)
    finally:
        numba.config.CACHE_DIR = saved
    if CACHE and LIGHT_LOAD:
        light = _light_loading_cache()
        if type(dispatcher._cache) is light.__base__:
            dispatcher._cache.__class__ = light
    if internal:
        dispatcher.__class__ = _internal_kernel_class(type(dispatcher))
    return dispatcher


def _internal_call_error(fn) -> TypeError:
    return TypeError(f"mistfast kernel {fn.__module__}.{fn.__qualname__} is compiled for jitted callers only "
                     "(no Python entry): call it from a jitted function, or call its .py_func from Python")


_INTERNAL_CLASSES: dict = {}


def _internal_kernel_class(base):
    """numba's dispatcher class for an ``internal`` kernel: compiled without its CPython and C
    wrappers (``no_cpython_wrapper``, ``no_cfunc_wrapper``), which unbox every argument bundle and
    cost compile time in every helper; numba would call the missing wrapper's null address from
    Python and crash the process, so a call from Python raises one clear error instead. Compiled
    callers never go through ``__call__`` (they type the dispatcher and link its code)."""
    cls = _INTERNAL_CLASSES.get(base)
    if cls is None:
        class InternalKernel(base):
            def __call__(self, *args, **kwargs):
                raise _internal_call_error(self.py_func)

            def __reduce__(self):   # by reference, like DeferredKernel
                return (_by_reference, (self.py_func.__module__, self.py_func.__qualname__))

        cls = _INTERNAL_CLASSES[base] = InternalKernel
    return cls


def _light_loading_cache():
    """numba's function cache with a lighter loading of cached kernels (``_numba_load.py``, kept
    out of this file because this file is part of the kernel cache key); kernels it loads are
    also saved as images (``_kernel_image.py``) when those are on."""
    from ._numba_load import light_loading_cache
    return light_loading_cache(blas_guard=_blas_check_without_scipy_linalg, before_compile=_before_compile,
                               image_dir=_CACHE_DIR if IMAGES else None)


def _before_compile() -> None:
    """A cache miss: numba compiles next. Every kernel needs its dispatcher first (compiled callers
    look their callees up in module globals), and numba sets up its registries (BLAS check first)."""
    _materialize()
    _check_blas_without_scipy_linalg()


def _materialize(kernel: DeferredKernel | None = None):
    """Make every deferred kernel's dispatcher and swap them into the package's module globals
    (where compiled callers look their callees up); returns ``kernel``'s dispatcher."""
    global _READY
    with _LOCK:
        if not _READY and kernel is not None and CACHE and LIGHT_LOAD:
            # only this kernel: a command loads one or two entry points from the cache, and
            # making a dispatcher for every kernel costs more than loading them; a cache miss
            # (compiling) makes them all first (_numba_load.LightLoadingCache)
            if kernel._dispatcher is None:
                _import_numba()
                kernel._dispatcher = _dispatcher(kernel.py_func, kernel._options)
            if isinstance(kernel._dispatcher._cache, _light_loading_cache()):
                return kernel._dispatcher
        if not _READY:
            _import_numba()
            for k in _DEFERRED:
                if k._dispatcher is None:
                    k._dispatcher = _dispatcher(k.py_func, k._options)
            package = __name__.rpartition(".")[0]
            for name, mod in list(sys.modules.items()):
                if mod is not None and (name == package or name.startswith(package + ".")):
                    space = vars(mod)
                    for key, val in list(space.items()):
                        if isinstance(val, DeferredKernel):
                            space[key] = val._dispatcher
                        elif isinstance(val, _LazyNumba):
                            space[key] = sys.modules["numba"]
            _DEFERRED.clear()
            _READY = True
    return None if kernel is None else kernel._dispatcher


class _LazyNumba:
    """Stands for the numba module in a kernel module's globals (for ``numba.prange``) so that
    importing the module does not import numba; every module's placeholder is replaced by numba
    itself before anything is compiled (``_materialize``). Attribute access imports numba."""

    def __getattr__(self, name):
        import numba
        return getattr(numba, name)


def lazy_numba():
    """The numba module once every kernel has its dispatcher, else a placeholder for it."""
    return sys.modules["numba"] if _READY else _LazyNumba()


def ensure_compiled_kernels() -> None:
    """Import numba and give every kernel imported so far its dispatcher (the first kernel call
    does this by itself)."""
    _materialize()


def _import_numba() -> None:
    """Import numba; unless cached kernels load lightly (then numba's registries, and with them
    its BLAS check, are set up only if something is compiled), run the BLAS check now."""
    import numba  # noqa: F401
    if LINEAR_INLINE_COPY:
        _copy_inlined_scopes_once()
    if LINK_ONLY:
        _link_only_entries_once()
    if FAST_TYPING:
        _fast_typing_once()
    if not (CACHE and LIGHT_LOAD):
        _check_blas_without_scipy_linalg()


LINEAR_INLINE_COPY = _VERIFIED and _env_on("MISTFAST_NUMBA_LINEAR_INLINE_COPY", "1")
_SCOPE_COPIES: dict | None = None   # while numba inlines one call: id(scope) -> (scope, memo of its copy)


def _copy_inlined_scopes_once() -> None:
    """Compile time: make numba's IR inliner (``inline="always"``, our ``jit_inline``) copy the
    callee's variable scope once per inlined call instead of once per basic block.

    numba copies the callee's IR block by block, each with its own ``copy.deepcopy`` memo, and
    every variable drags its scope (all the function's variables) along, so one inlining costs
    blocks x variables; a phase of the event loop, already holding its own inlined helpers, has
    hundreds of each (a third of a cold compile was this copying). Here the first block's copy of a
    scope is reused by the later blocks (their memo receives the first one's), which is what one
    deepcopy of all blocks with one memo gives: the same IR, so the same machine code (the golden
    and fingerprint tests check results bit for bit). ``MISTFAST_NUMBA_LINEAR_INLINE_COPY=0`` turns
    this off. Only ``Scope`` gets a ``__deepcopy__``, which copies as Python's default does unless
    an inlining is under way."""
    import copy

    from numba.core import inline_closurecall, ir

    if getattr(ir.Scope, "_mistfast_linear_copy", False):
        return

    def scope_deepcopy(self, memo):
        seen = _SCOPE_COPIES.get(id(self)) if _SCOPE_COPIES is not None else None
        if seen is not None and seen[0] is self:
            memo.update(seen[1])   # this block reuses the copies the first block made
            return memo[id(self)]
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, val in self.__dict__.items():
            setattr(new, key, copy.deepcopy(val, memo))
        if _SCOPE_COPIES is not None:
            _SCOPE_COPIES[id(self)] = (self, memo)
        return new

    original_inline_ir = inline_closurecall.InlineWorker.inline_ir

    def inline_ir(self, *args, **kwargs):
        global _SCOPE_COPIES
        outer, _SCOPE_COPIES = _SCOPE_COPIES, {}
        try:
            return original_inline_ir(self, *args, **kwargs)
        finally:
            _SCOPE_COPIES = outer

    ir.Scope.__deepcopy__ = scope_deepcopy
    ir.Scope._mistfast_linear_copy = True
    inline_closurecall.InlineWorker.inline_ir = inline_ir


LINK_ONLY = _VERIFIED and _env_on("MISTFAST_NUMBA_LINK_ONLY", "1")
# internal kernels (jit_noalloc, jit_internal) without CPython and C wrappers: the default
# (MISTFAST_NUMBA_INTERNAL=0 keeps the wrappers). It cuts the cold compile by ~8-13 %. Session 8
# measured it ~5 % slower per point; session 9 found the machine code of the point kernel the same
# instructions with and without (only symbol numbering differs) and a paired run of the two at
# 0.951, i.e. the 5 % was the noise of the loaded machine (docs/kernels.md, "Ninth session")
WRAPPERLESS = _wrapperless()
# internal kernels (jit_noalloc) without machine code of their own (their callers link their IR):
# off by default, it made the kernel ~8 % slower per point (a re-optimising caller then links the
# helper's IR as its -O3 round left it instead of the code generator's rewrite; docs/kernels.md)
INTERNAL_NO_CODE = WRAPPERLESS and LINK_ONLY and _env_on("MISTFAST_NUMBA_INTERNAL_NO_CODE")
_LINK_ONLY: set = set()      # python functions of the link_only kernels (jit_entry)
_KERNELS: set = set()        # python functions of every mistfast kernel with a dispatcher
_INTERNAL: set = set()       # python functions of the internal kernels (no Python entry, no machine code)
_COMPILING: list = []        # python function of each dispatcher numba is compiling, innermost last
_OURS = [0]                  # how many of them are mistfast kernels
_STACK_LISTENER: list = []   # the compile-event listener, once registered
FAST_TYPING = _VERIFIED and _env_on("MISTFAST_NUMBA_FAST_TYPING", "1")


def _compile_stack_once() -> None:
    """Track which dispatcher numba is compiling (``_COMPILING``, innermost last) and how many
    mistfast kernels are on that stack (``_OURS``), from numba's compile event
    (``numba.core.event``: it names the dispatcher; numba compiles under one global lock, so a
    stack is exact). The hooks below act only for mistfast's kernels and leave a user's own numba
    code to numba's defaults."""
    from numba.core import event

    if _STACK_LISTENER:
        return

    class _Compiling(event.Listener):
        def on_start(self, ev):
            fn = getattr((ev.data or {}).get("dispatcher"), "py_func", None)
            _COMPILING.append(fn)
            if fn in _KERNELS:
                _OURS[0] += 1

        def on_end(self, ev):
            if _COMPILING.pop() in _KERNELS:
                _OURS[0] -= 1

    listener = _Compiling()
    event.register("numba:compile", listener)
    _STACK_LISTENER.append(listener)


def _fast_typing_once() -> None:
    """Compile time: two costs of numba's type inference that change nothing it computes, cut
    while a mistfast kernel is being compiled (``_OURS``; docs/kernels.md, "Ninth session").

    * Comparing compile flags. numba caches every ``@overload`` implementation under a key that
      holds the current ``Flags`` (``typing.templates._get_impl``), and ``TargetConfig.__hash__``
      and ``__eq__`` rebuild a dict of all ~30 options through property getters on every lookup:
      ~200,000 lookups and about a tenth of a single-client cold compile. The hash numba computes
      is ``hash(tuple(sorted(values())))``, the sorted option *names* (``sorted`` of a dict gives
      its keys), the same for every instance of a class: it is computed once per class. Equality
      compares only the options set in either object (an option set in neither has its default in
      both), with ``is`` before ``==`` as dict comparison does: the same answer as numba's.
    * Colouring error messages. Type inference raises and catches tens of thousands of typing
      errors while it tries overload templates, and numba's message markup enters colorama's
      ``init()``/``deinit()`` (wrapping and unwrapping ``sys.stdout`` and ``sys.stderr``) for each
      piece of each message although nothing is printed in between. The message text is built
      apart from that (``reset_terminal``), so it is the same bytes without it.

    ``MISTFAST_NUMBA_FAST_TYPING=0`` turns both off."""
    from numba.core import errors, targetconfig

    cls = targetconfig.TargetConfig
    if getattr(cls, "_mistfast_fast_typing", False):
        return
    _compile_stack_once()
    original_hash, original_eq = cls.__hash__, cls.__eq__
    hashes: dict = {}

    def config_hash(self):
        if not _OURS[0]:
            return original_hash(self)
        kind = type(self)
        h = hashes.get(kind)
        if h is None:
            h = hashes[kind] = original_hash(self)
        return h

    def config_eq(self, other):
        if not _OURS[0] or type(other) is not type(self):
            return original_eq(self, other)
        mine, theirs = self._values, other._values
        if mine is theirs or mine == theirs:
            return True
        options = type(self).options
        for key in mine.keys() | theirs.keys():
            default = options[key].default
            a, b = mine.get(key, default), theirs.get(key, default)
            if not (a is b or a == b):
                return False
        return True

    cls.__hash__ = config_hash
    cls.__eq__ = config_eq
    cls._mistfast_fast_typing = True

    shell = getattr(errors, "ColorShell", None)   # absent when colorama is not installed
    if shell is not None:
        original_init, original_enter, original_exit = shell.__init__, shell.__enter__, shell.__exit__

        def init(self):
            self._mistfast_quiet = bool(_OURS[0])
            if not self._mistfast_quiet:
                original_init(self)

        def enter(self):
            if not getattr(self, "_mistfast_quiet", False):
                return original_enter(self)

        def exit_(self, *exc_detail):
            if not getattr(self, "_mistfast_quiet", False):
                return original_exit(self, *exc_detail)

        shell.__init__, shell.__enter__, shell.__exit__ = init, enter, exit_


def _link_only_entries_once() -> None:
    """Compile time: a ``link_only`` kernel (``jit_entry``) does not re-optimise its LLVM module
    (docs/kernels.md, "Compile time").

    numba links the code of every callee into each dispatcher's module (so that a cached kernel
    is self-contained) and runs the full -O3 module pipeline over all of it again: for the point
    kernel above ``simulate_single -> simulate_cluster -> _event_loop`` that is one -O3 run over
    the whole event loop per level, about 2 CPU s each. A link_only kernel's module gets the -O0
    pipeline, dead-code removal of the unused linked functions (the callees' Python wrappers) and
    numba's reference-count pruning; its own function still gets numba's function passes. It links
    each mistfast callee's IR as the callee's -O3 round left it, taken before its machine code was
    made: emitting machine code rewrites a module in place (CodeGenPrepare, constant hoisting), and
    linking that rewrite made every link_only level add its rewrites again (~5 % slower per point
    with all three wrappers link_only, session 5). A re-optimising caller gets numba's module.
    Without fastmath LLVM keeps floating-point semantics at any optimisation level, so results are
    the same bits (the golden and fingerprint tests).

    Which kernel is compiling: numba's compile event (``numba.core.event``) names the dispatcher;
    numba compiles under one global lock, so a stack of them is exact. Everything else compiled in
    the process, including a user's own numba functions, is optimised as numba always does."""
    import llvmlite.binding as ll
    from numba.core import codegen, config

    lib = codegen.CPUCodeLibrary
    if getattr(lib, "_mistfast_link_only", False):
        return
    _compile_stack_once()

    original = lib._optimize_final_module

    def optimize_final_module(self):
        fn = _COMPILING[-1] if _COMPILING else None
        if fn is None or fn not in _LINK_ONLY or self.name != fn.__qualname__:
            return original(self)
        mpm, pb = self._codegen._module_pass_manager(opt=0, loop_vectorize=False, slp_vectorize=False)
        mpm.add_global_dead_code_eliminate_pass()
        mpm.run(self._final_module, pb)
        if not config.LLVM_REFPRUNE_PASS:   # else the pass manager above pruned them
            self._final_module = codegen.remove_redundant_nrt_refct(self._final_module)

    original_finalize = lib._finalize_final_module

    def finalize_final_module(self):
        fn = _COMPILING[-1] if _COMPILING else None
        ours = fn in _KERNELS and self.name == fn.__qualname__
        loaded_without_code = getattr(self, "_object_caching_enabled", False) and self._compiled_object == b""
        if (ours and fn in _INTERNAL and INTERNAL_NO_CODE) or loaded_without_code:
            # an internal kernel never runs on its own: every caller links its IR (numba's
            # linking), so it gets no machine code; cached as such (serialize_using_object_code)
            self._finalize_dynamic_globals()
            self._verify_declare_only_symbols()
            self._mistfast_no_machine_code = True
            self._finalized = True
            return
        if ours:
            self._mistfast_ir_for_linking = self._final_module.clone()   # before machine code rewrites it
        original_finalize(self)

    original_serialize = lib.serialize_using_object_code

    def serialize_using_object_code(self):
        if getattr(self, "_mistfast_no_machine_code", False):   # cached: no machine code, the IR to link
            return (self.name, "object", (b"", self._get_module_for_linking().as_bitcode()))
        return original_serialize(self)

    original_set_env = codegen.JITCPUCodegen.set_env

    def set_env(self, env_name, env):
        # an internal kernel's environment global is not in the execution engine (no machine
        # code): numba would write through a null address; its callers' copies are set as usual
        if self._engine.get_global_value_address(env_name):
            original_set_env(self, env_name, env)

    original_linking = lib._get_module_for_linking

    def get_module_for_linking(self):
        parent = _COMPILING[-1] if _COMPILING else None
        clean = getattr(self, "_mistfast_ir_for_linking", None)
        if clean is None or parent not in _LINK_ONLY:
            return original_linking(self)
        shared = getattr(self, "_mistfast_shared_clean", None)
        if shared is None:
            shared = clean.clone()
            for f in shared.functions:   # as numba's: exported definitions may be linked many times
                if not f.is_declaration and f.linkage == ll.Linkage.external:
                    f.linkage = "linkonce_odr"
            self._mistfast_shared_clean = shared
        return shared

    lib._optimize_final_module = optimize_final_module
    lib._finalize_final_module = finalize_final_module
    lib._get_module_for_linking = get_module_for_linking
    lib.serialize_using_object_code = serialize_using_object_code
    codegen.JITCPUCodegen.set_env = set_env
    lib._mistfast_link_only = True


@contextlib.contextmanager
def _blas_check_without_scipy_linalg():
    """While numba may run its BLAS check (at the import of ``numba.np.arraymath``: when it sets up
    its registries, or when unpickling a cached kernel whose environment refers to that module),
    let it find ``scipy.linalg.cython_blas`` without importing the ``scipy.linalg`` package, whose
    ``__init__`` costs about as much as numba itself. The extension module is loaded on its own
    and taken out of ``sys.modules`` afterwards, so a later import (numba compiling ``np.dot``, or
    the user) finds scipy exactly as usual. Any failure falls back to numba's own import."""
    name = "scipy.linalg.cython_blas"
    preloaded = False
    if not ("numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules or name in sys.modules):
        try:
            import importlib.machinery as M
            import importlib.util

            import scipy
            finder = M.FileFinder(str(Path(scipy.__file__).parent / "linalg"),
                                  (M.ExtensionFileLoader, M.EXTENSION_SUFFIXES))
            spec = finder.find_spec(name)
            if spec is not None:
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                preloaded = True
                spec.loader.exec_module(module)
        except Exception:  # scipy missing or laid out otherwise: numba's own check decides
            if preloaded:
                sys.modules.pop(name, None)
                preloaded = False
    try:
        yield
    finally:
        if preloaded:
            sys.modules.pop(name, None)


def _check_blas_without_scipy_linalg() -> None:
    """numba's BLAS check now (see :func:`_blas_check_without_scipy_linalg`)."""
    with _blas_check_without_scipy_linalg():
        import numba.np.arraymath  # noqa: F401


def njit(**options):
    """A decorator making deferred numba kernels with these options (see :class:`DeferredKernel`);
    once numba is set up it makes dispatchers directly."""
    def decorate(fn):
        with _LOCK:
            if _READY:
                return _dispatcher(fn, options)
            kernel = DeferredKernel(fn, options)
            _DEFERRED.append(kernel)
            return kernel
    return decorate


jit = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy")

# small helpers called per token or per decode: inlined into their callers at the numba-IR
# level (a plain call passes every array argument with reference counting, which dominated the
# per-step cost of the engine)
jit_inline = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", inline="always")

# helpers that never allocate: compiled without the numba runtime (NRT), so they do not
# reference-count their array arguments. A jitted call otherwise increfs and decrefs every array
# argument (atomic operations); for the event helpers taking 30-50 arrays that was most of the
# cost of an arrival or a departure. An allocation inside one of these is a compile error.
# They are internal: called from jitted code only (no Python entry, no machine code of their own,
# see _internal_kernel_class; a call from Python raises). jit_noalloc_py is the same, callable
# from Python.
jit_noalloc = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", _nrt=False, internal=True)
jit_noalloc_py = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", _nrt=False)

# a helper that allocates (numba runtime on), called from jitted code only (internal, as above)
jit_internal = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", internal=True)

# an entry that only allocates state and calls the kernel below: its module does not re-optimise
# the callees' code (see _link_only_entries_once); the code that runs is the callee's own -O3 code
jit_entry = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", link_only=True)
