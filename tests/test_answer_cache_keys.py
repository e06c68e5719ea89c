"""The answer cache tells questions apart: every option that changes the answer, and the
installed torch, are in its key (a planted bug that dropped one printed the previous answer)."""

from sa_profiler.advice import answer_cache

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
