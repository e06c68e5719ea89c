"""A kept answer is printed only when it is whole; a cache that cannot be read or written never
changes the answer or the exit code. Each case asks the same question as an uncached run and
must print the same bytes and exit as it does."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from sa_profiler.advice import answer_cache

pytestmark = pytest.mark.skipif(answer_cache.cuda_possible(),
                                reason="answers are measured, never kept, where torch may see a GPU")

QUESTION = ["--gpu", "t4", "--shape", "64x32x32", "--impl", "reference,sdpa", "--json"]
# the console script's entry point; DISK_FULL makes every write of a file's bytes fail as a full disk does
PROBE = ("import errno, os, pathlib, sys\n"
         "if os.environ.get('DISK_FULL'):\n"
         "    def full(self, data):\n"
         "        raise OSError(errno.ENOSPC, 'No space left on device', str(self))\n"
         "    pathlib.Path.write_bytes = full\n"
         "sys.argv = ['sa-profile'] + sys.argv[1:]\n"
         "from sa_profiler.cli import main\n"
         "main()\n")
# root reads and writes past file modes; without these two capabilities it meets them as a user does
AS_USER = (["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
           if os.geteuid() == 0 and shutil.which("setpriv") else [])


def _ask(cache, *, user=False, **env):
    env = {**os.environ, "SA_PROFILER_CACHE": str(cache), "COLUMNS": "100", "SA_PROFILER_CACHE_LOG": "1", **env}
    return subprocess.run([*(AS_USER if user else []), sys.executable, "-c", PROBE, *QUESTION],
                          capture_output=True, env=env)


@pytest.fixture(scope="module")
def uncached():
    done = _ask("off")
    assert done.returncode == 0, done.stderr.decode()
    json.loads(done.stdout)
    return done


@pytest.fixture(scope="module")
def kept(tmp_path_factory, uncached):
    """A cache folder holding the question's answer, and that entry's path."""
    where = tmp_path_factory.mktemp("answers")
    assert _ask(where).stdout == uncached.stdout
    (entry,) = where.glob("*.txt")
    return where, entry


def _same(done, uncached):
    assert done.stdout == uncached.stdout
    assert done.returncode == uncached.returncode == 0
    assert b"Traceback" not in done.stderr


def _restored(entry, uncached):
    assert answer_cache.decode(entry.read_bytes()).encode() == uncached.stdout


@pytest.mark.parametrize("damage", [
    pytest.param(lambda whole: whole[:3000], id="truncated"),
    pytest.param(lambda whole: whole[:-1], id="last-byte-cut"),
    pytest.param(lambda whole: b"", id="empty"),
    pytest.param(lambda whole: b"garbage\x00\xff", id="not-utf8"),
    pytest.param(lambda whole: b"a stale answer, kept by an earlier version\n", id="earlier-format"),
    pytest.param(lambda whole: whole.replace(b"sa-profiler-answer/2", b"sa-profiler-answer/3", 1), id="later-format"),
    pytest.param(lambda whole: whole.replace(b'"', b"'", 1), id="one-byte-changed"),
])
@pytest.mark.slow
def test_a_damaged_entry_is_replaced_by_the_answer(kept, uncached, damage):
    where, entry = kept
    entry.write_bytes(damage(entry.read_bytes()))
    done = _ask(where)
    _same(done, uncached)
    assert b"is damaged" in done.stderr or b"not an entry" in done.stderr
    _restored(entry, uncached)
    quiet = _ask(where, SA_PROFILER_CACHE_LOG="0")  # now a hit: nothing said
    assert quiet.stdout == uncached.stdout and quiet.stderr == b""


@pytest.mark.slow
def test_the_note_is_said_only_when_asked(kept, uncached):
    where, entry = kept
    entry.write_bytes(b"")
    done = _ask(where, SA_PROFILER_CACHE_LOG="")
    _same(done, uncached)
    assert done.stderr == b""
    _restored(entry, uncached)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 and not AS_USER, reason="root reads any file; setpriv is not here")
def test_an_unreadable_entry_is_replaced(kept, uncached):
    where, entry = kept
    entry.chmod(0)
    done = _ask(where, user=True)
    _same(done, uncached)
    assert b"cannot read" in done.stderr
    _restored(entry, uncached)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 and not AS_USER, reason="root writes anywhere; setpriv is not here")
@pytest.mark.parametrize("entry_there", [False, True], ids=["empty-folder", "damaged-entry-in-it"])
def test_a_read_only_folder_answers_as_no_cache(tmp_path, uncached, entry_there):
    where = tmp_path / "answers"
    where.mkdir()
    damaged = where / "x.txt"
    if entry_there:
        assert _ask(where).stdout == uncached.stdout
        (damaged,) = where.glob("*.txt")
        damaged.write_bytes(b"cut sh")
    where.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        for _ in range(2):
            done = _ask(where, user=True)
            _same(done, uncached)
            assert b"not kept" in done.stderr
        assert sorted(p.name for p in where.iterdir()) == ([damaged.name] if entry_there else [])
    finally:
        where.chmod(stat.S_IRWXU)


@pytest.mark.slow
def test_a_full_disk_keeps_nothing_and_changes_nothing(tmp_path, uncached):
    done = _ask(tmp_path, DISK_FULL="1")
    _same(done, uncached)
    assert b"No space left on device" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(answer_cache.os, "replace", refuse)
    monkeypatch.setattr(answer_cache, "cacheable", lambda argv: True)
    monkeypatch.setenv("SA_PROFILER_CACHE", str(tmp_path))

    def run():
        print("the answer")
        raise SystemExit(0)

    with pytest.raises(SystemExit) as done:
        answer_cache.answered(["--gpu", "t4"], run)
    assert done.value.code == 0 and capsys.readouterr().out == "the answer\n"
    assert list(tmp_path.iterdir()) == []


def test_entry_round_trip_and_its_checks():
    text = "Tesla T4 \u2014 12.77 GiB usable\n"
    entry = answer_cache.encode(text)
    assert answer_cache.decode(entry) == text
    head, body = entry.split(b"\n", 1)
    assert head.split(b" ")[1] == str(len(text.encode())).encode()  # bytes, not characters
    for bad, why in [(entry + b"x", "bytes where"), (entry[:-1], "bytes where"), (b"", "not an entry"),
                     (head, "not an entry"), (b"sa-profiler-answer/2 x y\nz", "bytes where"),
                     (entry.replace(b"T4", b"T5"), "^the answer's digest does not match its header$"), (b"sa-profiler-answer/2 1\nz", "not an entry")]:
        with pytest.raises(ValueError, match=why):
            answer_cache.decode(bad)
    assert answer_cache.decode(answer_cache.encode("")) == ""


# -- the same cases in one process: fast, and reachable by mutation testing ---------------------------
ANSWER = "Tesla T4 \u2014 an answer of several lines\n" * 40


def _answered(monkeypatch, where, capsys, code=0):
    """What `answered` prints and exits with, and whether it ran the question."""
    monkeypatch.setattr(answer_cache, "cacheable", lambda argv: True)
    monkeypatch.setenv("SA_PROFILER_CACHE", str(where))
    ran = []

    def run():
        ran.append(1)
        sys.stdout.write(ANSWER)
        raise SystemExit(code)

    with pytest.raises(SystemExit) as done:
        answer_cache.answered(["--gpu", "t4"], run)
    out = capsys.readouterr()
    return out.out, out.err, done.value.code, bool(ran)


@pytest.mark.parametrize("damage", [b"", b"garbage\x00\xff", ANSWER.encode()[:100], b"sa-profiler-answer/2 5 x\nhello",
                                    None], ids=["empty", "not-utf8", "old-format", "bad-digest", "whole"])
def test_answered_prints_only_a_whole_entry(monkeypatch, tmp_path, capsys, damage):
    monkeypatch.setenv(answer_cache.LOG, "1")
    assert _answered(monkeypatch, tmp_path, capsys)[3]  # the first ask runs the question
    (entry,) = tmp_path.glob("*.txt")
    if damage is not None:
        entry.write_bytes(damage)
    out, err, code, ran = _answered(monkeypatch, tmp_path, capsys)
    assert out == ANSWER and code == 0 and ran == (damage is not None)
    assert ("damaged" in err) == (damage is not None)
    assert answer_cache.decode(entry.read_bytes()) == ANSWER  # kept whole again
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_question_is_not_kept_and_a_missing_entry_says_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(answer_cache.LOG, "1")
    out, err, code, ran = _answered(monkeypatch, tmp_path, capsys, code=2)
    assert code == 2 and ran and err == "" and not list(tmp_path.iterdir())


def test_the_log_switch(monkeypatch, capsys):
    for value, said in [("", False), ("0", False), ("no", False), ("off", False), ("false", False), ("1", True),
                        ("yes", True)]:
        monkeypatch.setenv(answer_cache.LOG, value)
        answer_cache._note("x")
        assert (capsys.readouterr().err == "sa-profile: answer cache: x\n") == said, value
    assert answer_cache.key(["--gpu", "t4"]) == answer_cache.key(["--gpu", "t4"])
    monkeypatch.setenv(answer_cache.LOG, "0")
    quiet = answer_cache.key(["--gpu", "t4"])
    monkeypatch.setenv(answer_cache.LOG, "1")
    assert answer_cache.key(["--gpu", "t4"]) == quiet  # the switch changes no answer, so not the key


def test_old_entries_beyond_the_limit_go(monkeypatch, tmp_path):
    monkeypatch.setattr(answer_cache, "MAX_ENTRIES", 3)
    for i in range(5):  # the newest last, by time; their names in the opposite order
        answer_cache._store(tmp_path, f"{9 - i}.txt", f"answer {i}")
        os.utime(tmp_path / f"{9 - i}.txt", (1000 + i, 1000 + i))
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["5.txt", "6.txt", "7.txt"]
    assert answer_cache.decode((tmp_path / "5.txt").read_bytes()) == "answer 4"


def test_what_is_not_cacheable_is_run_and_not_kept(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(answer_cache, "cacheable", lambda argv: False)
    monkeypatch.setenv("SA_PROFILER_CACHE", str(tmp_path))

    def run():
        sys.stdout.write(ANSWER)

    answer_cache.answered(["sweep"], run)
    assert capsys.readouterr().out == ANSWER and not list(tmp_path.iterdir())


def test_the_notes_name_the_file_and_the_reason(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(answer_cache.LOG, "1")
    entry = tmp_path / "e.txt"
    entry.write_bytes(answer_cache.encode(ANSWER))

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(answer_cache.Path, "read_bytes", refuse)
    assert answer_cache._read(entry) is None
    assert capsys.readouterr().err == "sa-profile: answer cache: cannot read e.txt: Permission denied; answered afresh\n"
    monkeypatch.undo()
    monkeypatch.setenv(answer_cache.LOG, "1")
    answer_cache._store(tmp_path / "deeper" / "still", "n.txt", ANSWER)  # folders made as needed
    assert answer_cache.decode((tmp_path / "deeper" / "still" / "n.txt").read_bytes()) == ANSWER
    blocker = tmp_path / "file"
    blocker.write_text("")
    answer_cache._store(blocker / "sub", "n.txt", ANSWER)
    assert capsys.readouterr().err == f"sa-profile: answer cache: not kept in {blocker / 'sub'}: Not a directory\n"
    monkeypatch.delenv(answer_cache.LOG)
    answer_cache._store(blocker / "sub", "n.txt", ANSWER)
    assert capsys.readouterr().err == ""  # said only when asked


def test_a_header_that_is_not_a_length_is_named():
    with pytest.raises(ValueError, match=r"^1 bytes where the header says x$"):
        answer_cache.decode(b"sa-profiler-answer/2 x y\nz")
    with pytest.raises(ValueError, match=r"^1 bytes where the header says \ufffd$"):
        answer_cache.decode(b"sa-profiler-answer/2 \xff y\nz")
