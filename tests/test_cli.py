"""The console script: every subcommand has --help; commands print what they promise."""

import argparse
import subprocess
import sys

import pytest

from poolwise.cli import build_parser, main, subparsers
from poolwise.pooling import list_pools


def subcommand_paths(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield (*prefix, name)
            yield from subcommand_paths(sub, (*prefix, name))


@pytest.mark.parametrize("path", [(), *subcommand_paths(build_parser())])
def test_every_subcommand_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: poolwise" in capsys.readouterr().out


def test_every_subcommand_describes_itself_and_every_option():
    parser = build_parser()
    for sub in subparsers(parser):
        assert sub.description, f"{sub.prog}: no description"
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{sub.prog} {action.option_strings or action.dest}: no help"


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["pain", "loso", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "epochs per fold (default: 20)" in text and "(default: lsfan)" in text
    with pytest.raises(SystemExit):
        main(["vision", "compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the recipe's, else 5)" in text
    assert "(default: token,avg,max,gem,ggem,map,prr,simpool,lse)" in text


def test_pools_lists_the_registry(capsys):
    assert main(["pools"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split("|")[1].strip() for line in lines[2:]]
    assert listed == list_pools()
    assert "| map | attention | latent query" in "\n".join(lines)
    assert "timm.layers.AttentionPoolLatent" in lines[listed.index("map") + 2]


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "poolwise", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("poolwise ")


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--subjects", "5", "--epochs", "1", "--image-epochs", "1",
            "--image-seeds", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "lsfan [REFERENCE (leaky)]" in printed and "cnn_tap [clean]" in printed
    # every comparison printed carries its uncertainty, and one line says what is noise
    assert "| run | pooled macro F1 (95 % interval) |" in printed
    assert "- the leak: lsfan's pooled macro F1 is " in printed
    assert "top-1 accuracy (%): ggem − token = " in printed and "paired t-test" in printed
    noise = [line for line in printed.splitlines()
             if line.startswith(("within the noise (", "every difference above is larger"))]
    assert len(noise) == 2  # one line for each half
    report = (out / "report.md").read_text()
    assert "Clean vs REFERENCE" in report and "poolwise demo --out" in report
    assert "image pools:" in printed and "| ggem | 2 |" in printed
    images = (out / "vision" / "compare.md").read_text()
    assert "| token | 2 |" in images and "## Verdict" in images
    assert len(list((out / "vision").glob("*/result.json"))) == 6  # 3 pools x 2 seeds
    for name in ("confusion_matrices.png", "per_subject.csv", "explain/gradcam.png",
                 "explain/attention.png", "explain/explanations.npz"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "runs" / "lsfan-clean").glob("fold_*.json"))) == 5
    stamp = (out / "runs" / "lsfan-clean" / "fold_C01.json").stat().st_mtime_ns
    assert main(args) == 0  # a second run resumes: nothing is retrained
    assert (out / "runs" / "lsfan-clean" / "fold_C01.json").stat().st_mtime_ns == stamp


def test_loso_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["pain", "loso", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "nothing" in capsys.readouterr().err
    from poolwise.pain.data.synth import write_synthetic_cohort

    write_synthetic_cohort(tmp_path / "c", n_subjects=5, seed=0)
    with pytest.raises(SystemExit) as exit_info:  # the choices are the registry's names
        main(["pain", "loso", str(tmp_path / "c"), "--out", str(tmp_path / "r"),
              "--model", "nosuch"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid choice: 'nosuch'" in err and "lsfan" in err


def test_compile_runs_show_no_cuda_home_notice_on_cpu(tmp_path):
    """torch.compile imports torch.utils.cpp_extension, which warns "No CUDA runtime is found"
    wherever a CUDA toolkit is installed without a GPU; the CLI drops exactly that record."""
    code = ("import logging, sys; from poolwise._logs import hide_cuda_home_notice; "
            "hide_cuda_home_notice(); log = logging.getLogger('torch.utils.cpp_extension'); "
            "logging.basicConfig(stream=sys.stderr); "
            "log.warning(\"No CUDA runtime is found, using CUDA_HOME='/x'\"); "
            "log.warning('another notice')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "No CUDA runtime" not in out.stderr and "another notice" in out.stderr
