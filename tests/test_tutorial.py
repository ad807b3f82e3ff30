"""tutorial/README.md stays true to the code: excerpts are verbatim, figures exist, commands parse."""
import ast
import importlib
import importlib.util
import re
import shlex
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "tutorial" / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
SOURCE_LINE = re.compile(r"^From (\S+\.py), ([\w.]+):$")


def blocks(language):
    """(the nearest non-blank line above the fence, the block's text) of each ```language block."""
    text = TUTORIAL.read_text()
    out = []
    for match in FENCE.finditer(text):
        if match.group(1) == language:
            above = [line for line in text[:match.start()].splitlines() if line.strip()]
            out.append((above[-1] if above else "", match.group(2)))
    return out


def excerpts():
    return [(SOURCE_LINE.match(above), code) for above, code in blocks("python")]


def definition_span(path, dotted):
    """Lines (first, last), 1-based, of the function or class `dotted` (e.g. VQGAN.quantize) in `path`, with the
    comment lines and decorators just above its def: the comment that names its equation belongs to it."""
    lines = path.read_text().splitlines()
    body = ast.parse(path.read_text()).body
    node = None
    for name in dotted.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
        assert node is not None, f"{path.name} defines no {dotted}"
        body = node.body
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    while first > 1 and lines[first - 2].strip().startswith("#"):
        first -= 1
    return first, node.end_lineno


def test_every_python_block_is_a_named_verbatim_excerpt():
    found = excerpts()
    assert len(found) >= 8, f"only {len(found)} excerpts in the tutorial"
    for source, code in found:
        assert source, f"a ```python block has no 'From FILE, FUNCTION:' line above it:\n{code}"
        path = ROOT / source.group(1)
        assert path.is_file(), f"the tutorial quotes {source.group(1)}, which does not exist"
        first, last = definition_span(path, source.group(2))
        span = path.read_text().splitlines()[first - 1:last]
        want = textwrap.dedent(code).splitlines()
        assert want, f"empty excerpt from {source.group(1)}, {source.group(2)}"
        windows = (textwrap.dedent("\n".join(span[i:i + len(want)])).splitlines() for i in range(len(span)))
        assert want in windows, f"not verbatim in {source.group(1)}, {source.group(2)}:\n{code}"


def test_excerpts_cover_every_stage():
    quoted = {source.group(1) for source, _ in excerpts() if source}
    assert {"vqgan.py", "absorbing.py", "sample.py", "evaluate.py"} <= quoted


def test_every_figure_exists_and_is_a_small_png_in_tutorial():
    shown = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", TUTORIAL.read_text())
    assert len(shown) >= 8
    for name in shown:
        path = (TUTORIAL.parent / name).resolve()
        assert path.is_file(), f"the tutorial shows {name}, which does not exist"
        assert path.parent == TUTORIAL.parent and path.suffix == ".png", f"{name} is not a PNG in tutorial/"
        assert path.stat().st_size < 100_000, f"{name} is {path.stat().st_size} bytes"


def python_commands():
    """[(script, argv)] of every `python X.py ...` in the ```bash blocks (continuations joined, && and ; split) and
    in the inline code of the text (the exercises)."""
    text = FENCE.sub("", TUTORIAL.read_text())
    lines = [line for _, code in blocks("bash") for line in code.replace("\\\n", " ").splitlines()]
    commands = []
    for line in lines + re.findall(r"`(python [^`]+)`", text):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)  # quotes kept; ; && | split off
        lexer.whitespace_split = True
        command = []
        for word in list(lexer) + [";"]:
            if word not in (";", "&&", "||", "|", "&"):
                command.append(word)
                continue
            if len(command) >= 2 and command[0] == "python" and command[1].endswith(".py"):
                commands.append((command[1], command[2:]))
            command = []
    return commands


def load_script(script):
    path = ROOT / script
    assert path.is_file(), f"the tutorial runs {script}, which does not exist"
    if path.parent == ROOT:
        return importlib.import_module(path.stem)  # tests/conftest.py puts the repo root on sys.path
    spec = importlib.util.spec_from_file_location(f"tutorial_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_commands():
    scripts = {script for script, _ in python_commands()}
    assert len(python_commands()) >= 8 and "tutorial/figures.py" in scripts


@pytest.mark.parametrize("script,argv", python_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_command_parses(script, argv):
    load_script(script).get_args(argv)  # argparse raises SystemExit on an unknown flag or a bad value
