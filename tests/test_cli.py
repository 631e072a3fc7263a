"""liverzoo.cli: a bad flag is one `error:` line and exit 1; --help still works."""
from tests.conftest import run_tool


def _run(*args):
    # evaluate.py does not import TensorFlow, so these runs are quick.
    return run_tool("evaluate", *args, timeout=120)


def test_bad_flag_is_one_error_line():
    for args in (["--nosuchflag=1"], ["--num_overlays=abc"]):
        result = _run(*args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_help_still_prints_usage():
    result = _run("--help")  # absl prints the usage and exits (with status 1, its convention)
    assert "--pred_dir" in result.stdout + result.stderr
    assert "error:" not in result.stderr


def test_absl_info_lines_are_hidden_warnings_kept(tmp_path):
    # TensorFlow's SavedModel writer logs each step at absl INFO (benchmark.py scale printed
    # dozens of "I1207 ... signature_serialization.py" lines); warnings still show.
    tool = tmp_path / "tool.py"
    tool.write_text("from absl import logging\nfrom liverzoo import cli\n"
                    "def main(argv):\n    logging.info('step chatter')\n    logging.warning('a warning')\n"
                    "cli.run(main)\n")
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "a warning" in result.stderr and "step chatter" not in result.stderr
