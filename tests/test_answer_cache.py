"""The kept headline answer: same output, no torch, and a key that changes with what the answer
depends on."""

import os
import subprocess
import sys

import pytest

from sa_profiler.advice import answer_cache

ARGS = ["--gpu", "t4", "--shape", "64x32x32", "--mode", "forward", "--dtype", "fp16", "--impl", "sdpa"]
PROBE = ("import sys; sys.argv = ['sa-profile'] + sys.argv[1:]\n"
         "from sa_profiler.cli import main\n"
         "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
         "print('torch imported:', 'torch' in sys.modules, 'exit:', code, file=sys.stderr)")


def _ask(args, cache):
    env = dict(os.environ, SA_PROFILER_CACHE=str(cache), COLUMNS="100")
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env)


@pytest.mark.skipif(answer_cache.cuda_possible(), reason="answers are measured, never kept, where torch may see a GPU")
def test_repeated_question_is_answered_without_torch(tmp_path):
    first = _ask(ARGS, tmp_path)
    again = _ask(ARGS, tmp_path)
    assert "torch imported: True exit: 0" in first.stderr
    assert "torch imported: False exit: 0" in again.stderr
    assert again.stdout == first.stdout and "Tesla T4" in first.stdout
    assert len(list(tmp_path.glob("*.txt"))) == 1
    off = _ask(ARGS, "off")
    assert off.stdout == first.stdout and "torch imported: True" in off.stderr


@pytest.mark.skipif(answer_cache.cuda_possible(), reason="answers are measured, never kept, where torch may see a GPU")
def test_failures_are_not_kept(tmp_path):
    bad = _ask(["--gpu", "t4", "--shape", "64x32"], tmp_path)
    assert "exit: 2" in bad.stderr and not list(tmp_path.glob("*.txt"))


def test_what_is_cacheable(monkeypatch):
    monkeypatch.setattr(answer_cache, "cuda_possible", lambda: False)
    assert answer_cache.cacheable(ARGS) and answer_cache.cacheable(["--gpu-mem=12G", "--shape", "1x2x3", "--json"])
    assert not answer_cache.cacheable(["gpus"])  # subcommands run as they are
    assert not answer_cache.cacheable([])
    assert not answer_cache.cacheable(ARGS + ["--html", "x.html"])  # writes a file
    assert not answer_cache.cacheable(ARGS + ["--engine", "measure"])
    monkeypatch.setattr(answer_cache, "cuda_possible", lambda: True)
    assert not answer_cache.cacheable(ARGS)  # auto would measure the local card


def test_key_follows_arguments_environment_and_code(monkeypatch, tmp_path):
    base = answer_cache.key(ARGS)
    assert answer_cache.key(ARGS) == base
    assert answer_cache.key(ARGS + ["--json"]) != base
    monkeypatch.setenv("COLUMNS", "37")
    assert answer_cache.key(ARGS) != base
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    with_env = answer_cache.key(ARGS)
    (tmp_path / "mod.py").write_text("x = 1\n")
    monkeypatch.setattr(answer_cache, "PACKAGE", tmp_path)
    one = answer_cache.key(ARGS)
    (tmp_path / "mod.py").write_text("x = 2\n")
    assert one != answer_cache.key(ARGS) and one != with_env


def test_cpu_build_of_torch_sees_no_cuda(monkeypatch):
    monkeypatch.setattr(answer_cache, "_version", lambda dist: "2.13.0+cpu")
    assert not answer_cache.cuda_possible()
    monkeypatch.setattr(answer_cache, "_version", lambda dist: "2.13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not answer_cache.cuda_possible()


def test_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("SA_PROFILER_CACHE", "off")
    assert answer_cache.folder() is None
    monkeypatch.delenv("SA_PROFILER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert answer_cache.folder() == tmp_path / "sa-profiler" / "answers"
