"""The answer cache tells questions apart: every option that changes the answer, and the
installed torch, are in its key (a planted bug that dropped one printed the previous answer)."""

import io
import os

import pytest

from sa_profiler.advice import answer_cache
from sa_profiler.advice import answer_cache as ac

BASE = ["--shape", "64x32x32"]
VARIANTS = [["--gpu", "t4"], ["--gpu", "l4"], ["--gpu-mem", "12G"], ["--gpu", "t4", "--headroom", "20%"],
            ["--gpu", "t4", "--dtype", "fp16"], ["--gpu", "t4", "--dtype", "fp32"], ["--gpu", "t4", "--mode", "train"],
            ["--gpu", "t4", "--batch", "4"], ["--gpu", "t4", "--impl", "sdpa"], ["--gpu", "t4", "--torch-version", "2.8"],
            ["--gpu", "t4", "--json"]]


def test_each_option_is_in_the_key():
    keys = [answer_cache.key(BASE + v) for v in VARIANTS]
    assert len(set(keys)) == len(VARIANTS)


def test_the_installed_torch_is_in_the_key(monkeypatch):
    argv = BASE + ["--gpu", "t4"]
    before = answer_cache.key(argv)
    real = answer_cache._version
    monkeypatch.setattr(answer_cache, "_version", lambda d: "2.8.0" if d == "torch" else real(d))
    assert answer_cache.key(argv) != before


def test_a_kept_answer_is_the_answer_to_that_question_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SA_PROFILER_CACHE", str(tmp_path))
    monkeypatch.setattr(answer_cache, "cuda_possible", lambda: False)
    asked = []

    def run_for(argv):
        def run():
            asked.append(argv)
            print("answer to", " ".join(argv))
            return 0
        return run

    for argv in (BASE + ["--gpu", "t4"], BASE + ["--gpu", "l4"], BASE + ["--gpu", "t4"]):
        try:
            answer_cache.answered(argv, run_for(argv))
        except SystemExit:
            pass
    out = capsys.readouterr().out.splitlines()
    assert out == ["answer to --shape 64x32x32 --gpu t4", "answer to --shape 64x32x32 --gpu l4",
                   "answer to --shape 64x32x32 --gpu t4"]
    assert len(asked) == 2  # the third was kept


# -- what the key reads, each part on its own ----------------------------------------------------------

class _Out(io.StringIO):
    def __init__(self, tty, size=None, fileno=True):
        super().__init__()
        self._tty, self._size, self._fileno = tty, size, fileno

    def isatty(self):
        return self._tty

    def fileno(self):
        if not self._fileno:
            raise io.UnsupportedOperation("no fileno")
        return 1


def test_the_terminal_part_of_the_key(monkeypatch):
    monkeypatch.setattr(ac.os, "get_terminal_size", lambda fd: os.terminal_size((101, 33) if fd == 1 else (1, 1)))
    for out, said in [(_Out(False), "pipe"), (_Out(True), "tty 101x33")]:
        monkeypatch.setattr(ac.sys, "stdout", out)
        assert ac._terminal() == said
    monkeypatch.setattr(ac.os, "get_terminal_size", lambda fd: (_ for _ in ()).throw(OSError("no size")))
    monkeypatch.setattr(ac.sys, "stdout", _Out(True))
    assert ac._terminal() == "tty"
    monkeypatch.setattr(ac.sys, "stdout", None)
    assert ac._terminal() == "no-stdout"


@pytest.mark.parametrize("dist", ["torch", "click", "rich", "pandas", "numpy"])
def test_the_key_follows_each_library_version(monkeypatch, dist):
    base = ac.key(["--gpu", "t4"])
    real = ac._version
    monkeypatch.setattr(ac, "_version", lambda d: "0.0.1-other" if d == dist else real(d))
    assert ac.key(["--gpu", "t4"]) != base


def test_the_key_ignores_variables_that_change_no_answer(monkeypatch):
    base = ac.key(["--gpu", "t4"])
    monkeypatch.setenv("SOME_UNRELATED_VARIABLE", "1")
    assert ac.key(["--gpu", "t4"]) == base
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert ac.key(["--gpu", "t4"]) != base


def test_the_package_digest_follows_names_not_caches(monkeypatch, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(ac, "PACKAGE", tmp_path)
    first = ac._package_digest()
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython.pyc").write_bytes(b"\x00compiled")
    assert ac._package_digest() == first  # compiled files change no answer
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    assert ac._package_digest() != first  # the same bytes under another name: another package


@pytest.mark.parametrize("value", ["off", "OFF", "0", "no", "No", "false", "FALSE"])
def test_every_way_to_turn_the_cache_off(monkeypatch, value):
    monkeypatch.setenv("SA_PROFILER_CACHE", value)
    assert ac.folder() is None


def test_the_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("SA_PROFILER_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ac.folder() == tmp_path / ".cache" / "sa-profiler" / "answers"


def test_cuda_possible_by_build_environment_and_platform(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ac.sys, "platform", "win32")  # no device files to look at: a CUDA build may see one
    monkeypatch.setattr(ac, "_version", lambda d: "2.14.1" if d == "torch" else "")
    assert ac.cuda_possible()
    monkeypatch.setattr(ac, "_version", lambda d: "2.14.1+cpu" if d == "torch" else "")
    assert not ac.cuda_possible()
    monkeypatch.setattr(ac, "_version", lambda d: "2.14.1" if d == "torch" else "")
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not ac.cuda_possible()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert ac.cuda_possible()
    monkeypatch.setattr(ac.sys, "platform", "darwin")
    assert not ac.cuda_possible()
    monkeypatch.setattr(ac.sys, "platform", "linux")
    seen = []
    monkeypatch.setattr(ac.os.path, "exists", lambda p: seen.append(p) or p == "/dev/kfd")
    assert ac.cuda_possible() and seen == ["/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"]


def test_an_option_given_with_equals_is_read_by_its_name(monkeypatch):
    monkeypatch.setattr(ac, "cuda_possible", lambda: False)
    assert ac.cacheable(["--gpu=t4=x", "--shape=1x2x3"])
    assert not ac.cacheable(["--gpu=t4", "--out=x=y"])


def test_a_library_that_is_not_installed_has_no_version():
    assert ac._version("no-such-distribution-anywhere") == ""
