"""Loading cached kernels quickly in a fresh process (``mistfast run``: docs/instant_commands.md).

numba loads a cached kernel in three slow steps that running it does not need:

* before every cache lookup it refreshes its typing and lowering registries (importing some 80
  modules of implementations), though nothing is compiled on a hit;
* it parses the LLVM bitcode stored next to the machine code, which is only used when another
  function is compiled later and links the kernel in (a parse of a few megabytes, about as long
  as loading everything else);
* it lists every symbol of that bitcode into its execution engine's table.

:class:`LightLoadingCache` (numba's function cache with its loading replaced) sets up only what
running loaded machine code needs: the NRT runtime and the hash-secret symbols (numba's C helpers,
``None``, the exception classes and the C math functions are registered when its CPU target is
created; parallel kernels start their thread pool on loading), and keeps the bitcode unparsed
until something links against it. A cache miss first gives every deferred kernel its dispatcher
(compiled callers look their callees up in module globals), then compiles through numba's own
pipeline, which refreshes everything itself.

This relies on numba internals checked on numba 0.68 (``_numba.VERIFIED_NUMBA``); other versions,
or ``MISTFAST_NUMBA_LIGHT_LOAD=0``, get numba's own loading. The loading code is kept out of
``_numba.py`` because that file is part of the kernel cache key: loading does not change the
compiled code, so editing it must not force a recompile.
"""
from __future__ import annotations

_LIGHT_CACHE = None
_LAZY_LIBRARY_CLASSES: dict = {}


def light_loading_cache(blas_guard, before_compile, image_dir):
    """The :class:`LightLoadingCache` class (made on first use: it subclasses numba's).
    ``blas_guard()``: context in which numba's BLAS check may run without importing scipy.linalg;
    ``before_compile()``: called on a cache miss, before numba compiles; ``image_dir``: where
    loaded kernels are saved as images (None: not saved)."""
    global _LIGHT_CACHE
    if _LIGHT_CACHE is None:
        from numba.core.caching import FunctionCache

        class LightLoadingCache(FunctionCache):
            def load_overload(self, sig, target_context):
                from numba.core.runtime import rtsys
                import numba.cpython.hashing  # noqa: F401  (registers the hash-secret symbols)
                rtsys.initialize(target_context)
                with self._guard_against_spurious_io_errors(), blas_guard():
                    data = self._load_overload(sig, target_context)
                if data is None:
                    before_compile()
                return data

            def _load_overload(self, sig, target_context):
                if not self._enabled:
                    return None
                data = self._cache_file.load(self._index_key(sig, target_context.codegen()))
                if data is None:
                    return None
                result = rebuild_compile_result(target_context, *data)
                if image_dir:
                    _save_image(data, image_dir)
                return result

            def save_overload(self, sig, data):
                super().save_overload(sig, data)
                if image_dir:  # just compiled: the image too, so the next process needs no numba
                    try:
                        payload = self._cache_file.load(self._index_key(sig, data.codegen))
                    except Exception:
                        payload = None
                    if payload is not None:
                        _save_image(payload, image_dir)

        _LIGHT_CACHE = LightLoadingCache
    return _LIGHT_CACHE


def rebuild_compile_result(target_context, libdata, fndesc, env, signature, objectmode, lifted, typeann,
                           reload_init, referenced_envs):
    """numba's ``CompileResult._rebuild`` (numba 0.68), except that the library keeps its linking
    bitcode unparsed (:func:`unserialize_lazily`)."""
    from numba.core.compiler import CompileResult
    for fn in reload_init or ():
        fn()
    codegen = target_context.codegen()
    library = unserialize_lazily(codegen, libdata)
    if getattr(library, "_shared_bitcode", None) is not None and libdata[2][0]:  # the one symbol looked up now
        # (an internal kernel has no machine code and no Python entry: _numba._internal_kernel_class)
        codegen._engine._defined_symbols.add(fndesc.llvm_cpython_wrapper_name)
    cfunc = target_context.get_executable(library, fndesc, env)
    result = CompileResult(target_context=target_context, typing_context=target_context.typing_context,
                           library=library, environment=env, entry_point=cfunc, fndesc=fndesc,
                           type_annotation=typeann, signature=signature, objectmode=objectmode, lifted=lifted,
                           typing_error=None, call_helper=None, metadata=None, reload_init=reload_init,
                           referenced_envs=referenced_envs)
    for e in referenced_envs:
        library.codegen.set_env(e.env_name, e)
    return result


def unserialize_lazily(codegen, state):
    """A code library from numba's cached ``(name, "object", (machine code, bitcode))``: the
    machine code is loaded now; the bitcode (only needed to link this library into a later
    compile) is parsed when first asked for. Other serialized forms go through numba."""
    name, kind, data = state
    if kind != "object":
        return codegen.unserialize_library(state)
    object_code, shared_bitcode = data
    library = codegen.create_library(name)
    library.__class__ = _lazy_library_class(type(library))
    library.enable_object_caching()
    library._set_compiled_object(object_code)
    library._shared_bitcode = shared_bitcode
    library._finalize_final_module()   # hands the machine code to the execution engine
    return library


def _lazy_library_class(base):
    """``base`` (numba's JIT code library) whose linking module is parsed on first use."""
    cls = _LAZY_LIBRARY_CLASSES.get(base)
    if cls is None:
        class LazyLinkingLibrary(base):
            _shared_bitcode = None

            def _get_module_for_linking(self):
                if self._shared_module is None and self._shared_bitcode is not None:
                    from llvmlite import binding as ll
                    self._shared_module = ll.parse_bitcode(self._shared_bitcode)
                    self._codegen._engine._load_defined_symbols(self._shared_module)
                    self._shared_bitcode = None
                return super()._get_module_for_linking()

        cls = _LAZY_LIBRARY_CLASSES[base] = LazyLinkingLibrary
    return cls


def _save_image(payload, image_dir) -> None:
    """Keep the kernel just loaded as an image that the next process runs without numba
    (``_kernel_image.py``): plain nopython code only."""
    libdata, fndesc, env, signature, objectmode, lifted, typeann, reload_init, referenced_envs = payload
    if objectmode or lifted or reload_init or (libdata[1] == "object" and not libdata[2][0]):
        return   # (no machine code: an internal kernel, only linked into its callers)
    from ._kernel_image import write_image
    write_image(image_dir, libdata, fndesc, env, signature, referenced_envs)
