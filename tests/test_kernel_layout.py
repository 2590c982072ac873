"""The kernels' structure (docs/kernels.md): state travels in module-level NamedTuple bundles, no
helper takes dozens of positional arrays, the event loop is a short loop of phases, and
``kernels.cluster`` keeps exporting every code and layout the Python lowering reads."""
import ast
from pathlib import Path

import pytest

from mistfast.kernels import cluster as CL
from mistfast.kernels import layout, state

KERNELS = Path(CL.__file__).parent
BUNDLES = ("Requests", "Stages", "Clients", "Routes", "Flows", "KVStores", "Batches", "Loop")
# entry points whose positional signatures are the contract with runner.py / pipeline.py, and the
# factories that turn those arrays into bundles
WIDE_BY_CONTRACT = {"simulate_cluster", "simulate_single", "_simulate_single_points_impl", "new_requests",
                    "new_stages", "summarize_point", "summarize_points"}
MAX_PARAMS = 12


def _jitted_functions():
    for path in sorted(KERNELS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                decos = [ast.unparse(d) for d in node.decorator_list]
                jitted = any(d.startswith(("jit", "njit")) for d in decos) or node.name.endswith("_impl")
                if jitted:
                    yield path.name, node


@pytest.mark.parametrize("name", BUNDLES)
def test_bundles_are_module_level_namedtuples_of_arrays(name):
    cls = getattr(state, name)
    # a class defined in __main__ or inside a function is pickled by value: numba's cache never hits
    assert cls.__module__ == "mistfast.kernels.state" and cls.__qualname__ == name
    assert issubclass(cls, tuple) and len(cls._fields) >= 4
    # compile cost follows a bundle's flattened size: keep each bundle small (Batches: 21, its
    # decode-run entries' tokens left run_rem added in docs/kernels.md "Round 5")
    assert len(cls._fields) <= 21, f"{name} has {len(cls._fields)} fields"


def test_no_kernel_helper_takes_dozens_of_positional_arrays():
    wide = {f"{fname}::{node.name}": len(node.args.args) for fname, node in _jitted_functions()
            if node.name not in WIDE_BY_CONTRACT and len(node.args.args) > MAX_PARAMS}
    assert wide == {}


def test_every_jitted_helper_is_found_by_the_check():
    # the parameter check above must see the helpers it guards
    names = {node.name for _, node in _jitted_functions()}
    assert {"_event_loop", "_enter_stage", "_leave_stage", "_form_batch", "_decode_run"} <= names


def test_event_loop_is_a_short_loop_of_named_phases():
    tree = ast.parse((KERNELS / "loop.py").read_text())
    loop = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_event_loop")
    assert loop.end_lineno - loop.lineno + 1 <= 60
    assert len(loop.args.args) == len(BUNDLES)
    called = {n.func.id for n in ast.walk(loop) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"_next_event_time", "_advance_transfers", "_workload_arrivals", "_release_step_outputs",
            "_start_new_work", "_run_decodes_ahead", "_close_books"} <= called


def test_cluster_exports_every_code_and_layout():
    public = [k for k in vars(layout) if k.isupper() and not k.startswith("_")]
    assert len(public) > 100
    for k in public:
        assert getattr(CL, k) == getattr(layout, k), k
    for entry in ("simulate_cluster", "simulate_single", "simulate_points", "simulate_points_serial"):
        assert callable(getattr(CL, entry))


def test_routing_codes_match_their_names():
    # codes index ROUTING_NAMES / STAGE_NAMES (pipeline.py maps names to codes by position)
    assert CL.ROUTING_NAMES[CL.RT_RR] == "round_robin"
    assert CL.ROUTING_NAMES[CL.RT_DRAIN] == "least_drain_time"
    assert CL.ROUTING_NAMES[CL.RT_MIST_JSQ] == "mist_jsq"
    assert CL.ROUTING_NAMES[6] == "least_requests"   # _choose's last branch
    assert CL.STAGE_NAMES[CL.K_KVFETCH] == "kv_fetch" and CL.STAGE_NAMES[CL.K_SKIP] == "skipped"
