"""MTL_CAP_ROWS: the gpu profile's structure (seeds, sweep points, epochs) on a few rows (`make gpu-structure`)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mtl_helpers import PROFILES, get_profile
from mtl_helpers.params import ParameterError
from mtl_helpers.profiles import ROW_SIZES, STRUCTURE_SIZES
from mtl_helpers.verdicts import MIN_STEPS


@pytest.fixture
def scratch_results(monkeypatch, tmp_path):
    monkeypatch.delenv("MTL_PROFILE", raising=False)
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path / "results"))


def test_every_size_of_every_profile_is_known_as_rows_or_structure():
    # a new size must say whether MTL_CAP_ROWS caps it
    for profile in PROFILES.values():
        assert set(profile.sizes) <= ROW_SIZES | STRUCTURE_SIZES, profile.name


def test_the_cap_caps_every_row_count_of_the_full_profile_and_none_becomes_the_cap(scratch_results, monkeypatch):
    monkeypatch.setenv("MTL_CAP_ROWS", "32")
    profile = get_profile("full")
    assert profile.name == "full"
    assert (profile.max_train, profile.max_eval, profile.sweep_train, profile.sweep_eval) == (32, 32, 32, 32)
    assert profile.max_test == 32  # the whole test sets, capped
    assert profile.sizes == {
        "ablation_train": 32,
        "low_data": (32, 32, 32),
        "curve": (32, 32, 32, 32, 32, 32),  # the "all" point (None) is all of the capped rows
        "phase2_train": 32,
        "ner_train": 32,
        "sweep_points": 4,
        "sweep_extensions": 2,
    }
    assert profile.size("curve")[-1] == profile.max_train  # chapter 8 runs its shared arms there


def test_the_cap_keeps_the_structure_of_the_profile(scratch_results, monkeypatch):
    monkeypatch.setenv("MTL_CAP_ROWS", "24")
    capped, gpu = get_profile("gpu"), PROFILES["gpu"]
    for field in ("seeds", "epochs", "batch_size", "eval_batch_size", "sweep_seeds"):
        assert getattr(capped, field) == getattr(gpu, field), field
    assert capped.size("sweep_points") == gpu.size("sweep_points") == 4
    assert capped.seed_list == [0, 1, 2, 3, 4]
    assert PROFILES["gpu"].max_train == 4000  # the stored profile is left as it was


def test_sizes_below_the_cap_stay_and_tuples_keep_length_and_order(scratch_results, monkeypatch):
    monkeypatch.setenv("MTL_CAP_ROWS", "120")
    cpu = get_profile("cpu")
    assert (cpu.max_train, cpu.max_eval, cpu.sweep_train, cpu.sweep_eval) == (120, 120, 100, 100)
    assert cpu.size("low_data") == (50, 120)
    assert cpu.size("curve") == (50, 120, 120)
    assert cpu.size("ablation_train") == 40
    gpu = get_profile("gpu")
    assert gpu.size("curve") == (50, 120, 120, 120, 120)
    assert gpu.size("low_data") == (100, 120, 120)


def test_every_capped_size_fits_inside_the_capped_training_rows(scratch_results, monkeypatch):
    # chapters take their subsets (low data, ablation, curve) from the profile's training rows
    monkeypatch.setenv("MTL_CAP_ROWS", "32")
    for name in PROFILES:
        profile = get_profile(name)
        for key in ROW_SIZES:
            values = profile.size(key)
            for rows in values if isinstance(values, tuple) else (values,):
                assert isinstance(rows, int) and 1 <= rows <= profile.max_train, (name, key, rows)


def test_the_cap_is_said_in_one_line(scratch_results, monkeypatch, capsys):
    monkeypatch.setenv("MTL_CAP_ROWS", "32")
    get_profile("gpu")
    assert capsys.readouterr().out == "MTL_CAP_ROWS=32: every row count of the gpu profile is capped at 32 rows.\n"


def test_the_cap_applies_to_the_profile_mtl_profile_chooses(scratch_results, monkeypatch):
    monkeypatch.setenv("MTL_PROFILE", "gpu")
    monkeypatch.setenv("MTL_CAP_ROWS", "32")
    profile = get_profile("cpu")
    assert (profile.name, profile.seeds, profile.max_train) == ("gpu", 5, 32)


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_unset_or_empty_cap_leaves_the_profile_alone(scratch_results, monkeypatch, capsys, empty):
    monkeypatch.setenv("MTL_CAP_ROWS", empty)
    assert get_profile("gpu") is PROFILES["gpu"]
    monkeypatch.delenv("MTL_CAP_ROWS")
    assert get_profile("gpu") is PROFILES["gpu"]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad", ["0", "-5", "3.5", "abc", "32 rows", "1e3"])
def test_a_bad_cap_is_refused_naming_the_variable_and_the_fix(scratch_results, monkeypatch, bad):
    monkeypatch.setenv("MTL_CAP_ROWS", bad)
    with pytest.raises(ParameterError, match=r"MTL_CAP_ROWS=.*set it to a whole number >= 1, such as 32"):
        get_profile("gpu")


def test_capped_runs_are_refused_where_their_records_would_join_the_books(monkeypatch):
    # capped runs carry the profile's name: in the book's results folder they would pass for the gpu profile's
    monkeypatch.delenv("MTL_PROFILE", raising=False)
    monkeypatch.delenv("MTL_RESULTS_DIR", raising=False)
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # results/ of the book's checkout
    monkeypatch.setenv("MTL_CAP_ROWS", "32")
    with pytest.raises(ParameterError, match="set MTL_RESULTS_DIR to a scratch folder"):
        get_profile("gpu")


ROOT = Path(__file__).resolve().parent.parent


def test_make_test_runs_the_capped_gpu_profile_after_nbval_into_the_scratch_folder():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    makefile = (ROOT / "Makefile").read_text()
    [test_line] = [line for line in makefile.splitlines() if line.startswith("test:")]
    steps = test_line.split(":", 1)[1].split()
    assert steps.index("nbval") < steps.index("gpu-structure")
    # Under `make test` the variables of the outer make would make this one print its directories.
    outer = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "gpu-structure", "VENV=/nonexistent-venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    run = " ".join(done.stdout.replace("\\\n", " ").split())
    assert "MTL_CAP_ROWS=16 " in run and "CUDA_VISIBLE_DEVICES= " in run
    assert f"MTL_RESULTS_DIR={ROOT}/.scratch/gpu-structure/results " in run
    assert "scripts/run_notebooks.py --profile gpu --out " + f"{ROOT}/.scratch/gpu-structure " in run
    chapters = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert run.endswith(" ".join(chapters)), "every chapter, in book order"


def test_the_gpu_and_full_profiles_share_their_structure_so_gpu_structure_covers_both(scratch_results, monkeypatch):
    # make gpu-structure runs the gpu profile capped; capped, the full profile differs only in the
    # curve's extra "all" point, which becomes the cap: the same code path as the gpu curve's last point
    monkeypatch.setenv("MTL_CAP_ROWS", "16")
    gpu, full = get_profile("gpu"), get_profile("full")
    for field in ("seeds", "epochs", "batch_size", "eval_batch_size", "sweep_seeds", "max_train", "max_test"):
        assert getattr(gpu, field) == getattr(full, field), field
    assert {k: v for k, v in full.sizes.items() if k != "curve"} == {k: v for k, v in gpu.sizes.items() if k != "curve"}
    assert set(full.size("curve")) == set(gpu.size("curve"))


def test_the_cpu_standard_runs_take_enough_steps_for_a_verdict():
    # a full fine-tuning run of both tasks at the cpu profile's size takes at least MIN_STEPS optimizer steps
    cpu = PROFILES["cpu"]
    steps = 2 * math.ceil(cpu.max_train / cpu.batch_size) * cpu.epochs
    assert steps >= MIN_STEPS
