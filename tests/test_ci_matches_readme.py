"""`.ci/run` runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("<!-- test-command -->")
    assert readme[start + 1] == "```bash"
    command = readme[start + 2]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    # set-up blocks (system packages, services) may come first; the test command is the last line, verbatim
    assert ci[-1] == command
    assert all("pytest" not in line for line in ci[:-1])
