"""A test per guard of sa_profiler/torch_compat/, on whichever torch runs the suite.

Each guard is detected by behaviour or schema; each test also pins the release where the
behaviour is known to change, so that a torch release that moves one shows up here, in one
place. CI runs this file on the floor, a middle release and the newest (reports/compat/)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from sa_profiler import torch_compat
from sa_profiler.attention import backends
from sa_profiler.attention.routing import simulating as routing_simulating
from sa_profiler.torch_compat import version_tuple

VERSION = version_tuple(torch.__version__)
aten = torch.ops.aten


def test_the_running_torch_is_in_the_declared_range():
    assert torch_compat.unsupported(torch.__version__) is None


@pytest.mark.parametrize("version, ok", [("2.3.1", False), ("2.3.99", False), ("2.4.0", True), ("2.8.0+cu128", True),
                                         ("2.14.1+cu130", True), ("2.15.0", True), ("3.0.0", True)])
def test_the_range_check(version, ok, monkeypatch):
    """Below the floor: refused; newer than the releases tested: answered, with a note."""
    monkeypatch.delenv(torch_compat.OVERRIDE, raising=False)
    why = torch_compat.unsupported(version)
    assert (why is None) == ok
    if not ok:
        assert version in why and "2.4 to 2.14" in why and "\n" not in why
        monkeypatch.setenv(torch_compat.OVERRIDE, "1")
        assert torch_compat.unsupported(version) is None


@pytest.mark.parametrize("version, newer", [("2.14.1+cu130", False), ("2.14.99", False), ("2.15.0", True),
                                            ("3.0.0", True), ("2.4.0", False), (None, False), ("dev", False)])
def test_a_newer_torch_gets_a_note(version, newer):
    note = torch_compat.untested(version)
    assert (note is not None) == newer
    if newer:
        assert version in note and "untested" in note and "\n" not in note


def test_the_floor_is_the_one_in_pyproject_and_there_is_no_ceiling():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    lo, hi = torch_compat.SUPPORTED
    assert f'"torch>={lo}",' in text and "torch>=2.4,<" not in text


def test_the_cli_refuses_a_torch_outside_the_range_in_one_line(monkeypatch, capsys):
    from sa_profiler import cli

    monkeypatch.delenv(torch_compat.OVERRIDE, raising=False)
    monkeypatch.setattr(torch_compat, "installed_version", lambda: "2.3.1")
    with pytest.raises(SystemExit) as exit_:
        cli.cli.main(["--gpu", "t4", "--shape", "64x32x32"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "torch 2.3.1" in err and "Traceback" not in err


def test_the_cli_answers_on_a_newer_torch_with_a_note(monkeypatch, capsys):
    from sa_profiler import cli

    monkeypatch.setattr(torch_compat, "installed_version", lambda: "2.15.0")
    with pytest.raises(SystemExit) as exit_:
        cli.cli.main(["--gpu", "t4", "--shape", "64x32x32", "--impl", "sdpa", "--mode", "forward"])
    out = capsys.readouterr()
    assert exit_.value.code == 0 and "Tesla T4" in out.out
    assert out.err.count("\n") == 1 and "torch 2.15.0 is newer" in out.err


def _meta(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype, device="meta")


def test_fused_sdpa_ops_run_on_meta_after_prepare():
    """Before 2.5 the fused forward ops and the cuDNN backward have no meta kernel."""
    torch_compat.prepare()
    assert torch_compat.missing_fakes() == []
    if VERSION >= (2, 5):
        assert not torch_compat.sdpa_ops._library  # nothing registered on a torch that has them
    q, k, v = _meta(2, 4, 100, 64), _meta(2, 4, 80, 64), _meta(2, 4, 80, 32)
    out, lse, *_ = aten._scaled_dot_product_efficient_attention(q, k, v, None, True)
    assert out.shape == (2, 4, 100, 32) and lse.shape == (2, 4, 128) and lse.dtype == torch.float32
    out, lse, *_ = aten._scaled_dot_product_flash_attention(q, k, k)
    assert out.shape == (2, 4, 100, 64) and lse.shape[:3] == (2, 4, 100)


@pytest.mark.parametrize("name", sorted(n for n in torch_compat.sdpa_ops._FAKES if n.startswith("_scaled_dot_product")))
def test_each_fake_equals_the_meta_kernel_of_a_torch_that_has_one(name):
    """Our fakes (torch 2.8's definitions) against the meta kernels of the torch running, where
    it has them: the same attention output (shape, strides, dtype), and every other output
    the same allocation (bytes rounded to the CUDA allocator's 512; later releases reshaped
    the logsumexp and the philox seed without changing its size there)."""
    from sa_profiler.engine.allocator import round_size

    if name in torch_compat.missing_fakes() or (torch_compat.sdpa_ops._library and VERSION < (2, 5)):
        pytest.skip("this torch has no meta kernel of its own to compare with")
    q, k, v = _meta(2, 4, 100, 64), _meta(2, 4, 80, 64), _meta(2, 4, 80, 64)
    if name == "_scaled_dot_product_efficient_attention":
        args = (q, k, v, None, True)
    elif name == "_scaled_dot_product_flash_attention":
        args = (q, k, v)
    elif name == "_scaled_dot_product_cudnn_attention":
        args = (q, k, v, None, True) if torch_compat.cudnn_takes_bias() else (q, k, v)
    else:
        out = _meta(2, 4, 100, 64)
        lse = torch.empty(2, 4, 100, device="meta")
        seed = torch.empty((), dtype=torch.long, device="meta")
        args = ((out, q, k, v, out, lse, seed, seed, None, None, None, 100, 80, 0.0, False)
                if torch_compat.cudnn_takes_bias() else (out, q, k, v, out, lse, None, None, 100, 80, 0.0, False, seed, seed))
    theirs = getattr(aten, name).default(*args)
    ours = torch_compat.sdpa_ops._FAKES[name](*args)
    assert (theirs[0].shape, theirs[0].stride(), theirs[0].dtype) == (ours[0].shape, ours[0].stride(), ours[0].dtype)
    for a, b in zip(theirs[1:], ours[1:]):
        if isinstance(a, torch.Tensor):
            assert round_size(a.untyped_storage().nbytes()) == round_size(b.untyped_storage().nbytes())


def test_cudnn_schema_guard():
    assert torch_compat.cudnn_takes_bias() == (VERSION >= (2, 5))
    q = _meta(1, 2, 64, 64)
    out = torch_compat.cudnn_attention(q, q, q, None, True, 0.0, False, None)
    assert out.shape == q.shape
    lse_flag = (q, q, q, None, False, 0.0, False, False) if torch_compat.cudnn_takes_bias() else (q, q, q, 0.0, False, False)
    assert torch_compat.cudnn_computes_lse(lse_flag) == (not torch_compat.cudnn_takes_bias())


def test_sdp_default_flags_guard():
    """The running torch's default flags are the table's (a fresh process: no test switched them)."""
    import subprocess
    import sys

    code = ("import torch; c = torch.backends.cuda; print(c.flash_sdp_enabled(), c.mem_efficient_sdp_enabled(), "
            "c.math_sdp_enabled(), c.cudnn_sdp_enabled())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == [str(v) for v in torch_compat.sdp_defaults(torch.__version__).values()]


def test_gqa_guard():
    assert torch_compat.sdpa_takes_gqa() == (VERSION >= (2, 5))


def test_checkpoint_on_meta_guards():
    assert torch_compat.checkpoint_knows_meta() == (VERSION >= (2, 5))
    assert torch_compat.fork_rng_knows_meta() == (VERSION >= (2, 5))


def test_make_saved_tensor_guard():
    if VERSION <= (2, 8):
        assert torch_compat.make_saved_tensor() is None
    if VERSION >= (2, 13):
        assert torch_compat.make_saved_tensor() is not None


def test_group_norm_backward_guard():
    assert torch_compat.group_norm_backward_copies_grad() == (VERSION <= (2, 13))


def test_the_privates_are_there():
    """Every torch private the package reads, on the running torch: a release that drops or
    renames one fails here, by name (the callers' fallbacks are tested where they are used)."""
    assert {F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention} == torch_compat.sdpa_functions()
    assert [a.name for a in torch_compat.op_schema(aten.add_.Tensor).arguments][:2] == ["self", "other"]
    assert torch_compat.op_schema(aten.add_.Tensor).arguments[0].alias_info.is_write
    assert torch_compat.graph_task_id() == -1  # outside a backward
    seen = []
    x = torch.ones(2, requires_grad=True)
    y = x.exp()
    y.register_hook(lambda g: seen.append(torch_compat.graph_task_id()))
    y.sum().backward()
    assert seen and seen[-1] >= 0
    assert torch_compat.non_strict_tracing() is False and torch_compat.defaults_in_force()
    if torch_compat.make_saved_tensor() is not None:
        assert isinstance(torch_compat.make_saved_tensor()(x, is_output=False), torch_compat.saved_tensor_type())
    view = x.detach()[:1]
    assert torch_compat.is_view(view) and torch_compat.view_base(view) is not None
    assert not torch_compat.is_view(x) and torch_compat.view_base(x) is None
    half = torch_compat.half_to_float_softmax()
    assert half["softmax"](torch.ones(2, dtype=torch.float16), 0, False).dtype == torch.float16
    assert half["log_softmax"](torch.ones(2), 0, False).shape == (2,)
    from sa_profiler.torch_compat import dispatch

    with dispatch.disable_current_modes():
        assert dispatch.tree_map(lambda v: v + 1, dispatch.tree_flatten([1, (2,)])[0]) == [2, 3]
    assert issubclass(dispatch.TorchDispatchMode, object)


def _checkpointed_sdpa(x):
    q = x.view(x.shape[0], 2, -1, 16)
    return torch.utils.checkpoint.checkpoint(lambda t: F.scaled_dot_product_attention(t, t, t).sum(), q,
                                             use_reentrant=False)


def _routed(monkeypatch) -> list:
    from sa_profiler.attention import routing

    seen, route = [], routing.AttentionRouting.route
    monkeypatch.setattr(routing.AttentionRouting, "route", lambda self, *a, **k: seen.append(1) or route(self, *a, **k))
    return seen


def test_torchs_checkpoint_recompute_is_routed_on_meta(monkeypatch):
    """The recompute of a non-reentrant checkpoint runs under the simulation's routing, on every
    release (none re-enters a mode of ours by itself), and the patched module attributes are
    torch's own again after the scope."""
    before = {a: getattr(torch.utils.checkpoint, a) for a in dir(torch.utils.checkpoint) if a.startswith("_") and not a.startswith("__")}
    fork = torch.random.fork_rng
    routed = _routed(monkeypatch)
    caps = backends.DeviceCaps("cuda", (8, 0), torch_version=torch.__version__)
    with routing_simulating(caps):
        x = torch.empty(2, 256, 32, device="meta", dtype=torch.float16, requires_grad=True)
        _checkpointed_sdpa(x).backward()
    assert len(routed) == 2  # the forward's call and the recompute's
    after = {a: getattr(torch.utils.checkpoint, a) for a in dir(torch.utils.checkpoint) if a.startswith("_") and not a.startswith("__")}
    assert before == after and torch.random.fork_rng is fork


def test_a_context_fn_of_the_callers_own_is_kept(monkeypatch):
    seen = []
    routed = _routed(monkeypatch)

    def context_fn():
        seen.append(1)
        return contextlib.nullcontext(), contextlib.nullcontext()

    caps = backends.DeviceCaps("cuda", (8, 0), torch_version=torch.__version__)
    with routing_simulating(caps):
        x = torch.empty(2, 4, 64, 16, device="meta", dtype=torch.float16, requires_grad=True)
        torch.utils.checkpoint.checkpoint(lambda t: F.scaled_dot_product_attention(t, t, t).sum(), x,
                                          use_reentrant=False, context_fn=context_fn).backward()
    assert seen == [1] and len(routed) == 2


# -- --torch-version on every command -------------------------------------------------------

def _cli(args):
    from click.testing import CliRunner

    from sa_profiler.cli import cli

    return CliRunner().invoke(cli, args, env={"SA_PROFILER_CACHE": "off"})


VIT = ["fit", "examples/zoo/vit.py:vit_tiny_test", "--input", "3x32x32", "--batch", "4", "--gpu", "h100", "--amp",
       "fp16", "--json"]


@pytest.mark.parametrize("version, backend", [("2.8", "flash"), ("2.9", "cudnn")])
def test_fit_answers_as_the_torch_asked(version, backend, monkeypatch):
    import json

    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = _cli([*VIT, "--torch-version", version])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["sdpa_backends"] == {backend: 2} and doc["torch_version"] == version


def test_sweep_answers_as_the_torch_asked(tmp_path):
    import json

    import pandas as pd

    args = ["sweep", "--gpu", "h100", "--impl", "sdpa", "--dtype", "fp16", "--mode", "forward", "--channels", "64",
            "--res", "32", "--batch", "2"]
    for version in ("2.8", "2.9"):
        out = _cli([*args, "--torch-version", version, "--out", str(tmp_path / version)])
        assert out.exit_code == 0, out.output
        assert json.loads((tmp_path / version / "meta.json").read_text())["torch_version"] == version
    backends_ = {v: set(pd.read_csv(tmp_path / v / "results.csv").backend) for v in ("2.8", "2.9")}
    assert backends_ == {"2.8": {"efficient"}, "2.9": {"cudnn"}}  # q/k heads of 8 beside v of 64: not flash
    largest = {v: set(pd.read_csv(tmp_path / v / "largest.csv").backend) for v in ("2.8", "2.9")}
    assert largest == backends_  # the largest-batch search chooses as the grid's rows did


@pytest.mark.parametrize("command", [["--gpu", "t4", "--shape", "64x32x32"], VIT[:-1],
                                     ["sweep", "--gpu", "t4", "--out", "unused"]])
def test_a_torch_version_outside_the_range_is_refused(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _cli([*command, "--torch-version", "2.3"])
    assert out.exit_code == 2 and "from 2.4 to 2.14" in out.output and out.output.count("\n") == 1
    assert not (tmp_path / "unused").exists()


def test_the_fused_adamw_fake_is_an_in_place_update_that_allocates_nothing():
    """As torch's own meta kernel where it has one (2.8 on): nothing returned, nothing made."""
    params = [torch.zeros(8, device="meta")]
    lists = [params, [torch.zeros(8, device="meta")], [torch.zeros(8, device="meta")],
             [torch.zeros(8, device="meta")], [], [torch.zeros((), device="meta")]]
    kwargs = dict(lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    assert torch_compat.sdpa_ops._fake_fused_adamw(*lists, **kwargs) is None
    if "_fused_adamw_" not in torch_compat.missing_fakes() and not (torch_compat.sdpa_ops._library and VERSION < (2, 5)):
        assert aten._fused_adamw_.default(*lists, **kwargs) in (None, ())


def test_fused_adamw_runs_on_meta_only_inside_fused_on_meta():
    p = torch.nn.Parameter(torch.zeros(8, device="meta"))
    p.grad = torch.zeros(8, device="meta")
    with pytest.raises(RuntimeError, match="fused=True"):  # torch's own check: meta is no fused device
        torch.optim.AdamW([p], fused=True).step()  # in the constructor up to 2.4, in the step after
    with torch_compat.fused_on_meta():
        opt = torch.optim.AdamW([p], fused=True)
        opt.step()
    assert opt.state[p]["exp_avg"].device.type == "meta" and opt.state[p]["step"].device.type == "meta"
    from torch.utils import _foreach_utils

    assert "meta" not in _foreach_utils._get_fused_kernels_supported_devices()  # put back
