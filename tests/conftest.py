import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs readable

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A VQGAN and a prior trained for a few steps on 64 shapes images: real checkpoints for the later stages."""
    import absorbing
    import vqgan
    out = tmp_path_factory.mktemp("tiny_run")
    common = ["--out-dir", str(out), "--bf16", "off", "--log-every", "1", "--max-steps", "3"]
    vqgan.main(vqgan.get_args(common + ["--n-shapes", "64", "--batch-size", "8", "--sample-every", "100"]))
    absorbing.main(absorbing.get_args(common + ["--codes", str(out / "codes.npy"), "--n-layer", "1", "--n-embd", "32",
                                                "--n-head", "2", "--batch-size", "8", "--sample-every", "0"]))
    return out


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_command(argv, nproc=1):
    """The command line that runs one of the project's scripts in a fresh process, under torchrun if nproc > 1."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    return [sys.executable, *torchrun, *argv]


SCRIPT_ENV = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")


@pytest.fixture
def start_script():
    """Start a script in the background (CPU, one thread per process): a Popen to signal or kill."""
    return lambda argv, nproc=1: subprocess.Popen(script_command(argv, nproc), cwd=REPO, env=SCRIPT_ENV,
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def run_script():
    """Run a script to its end in a fresh process (CPU, one thread per process); it must succeed."""
    def run(argv, nproc=1, timeout=300):
        done = subprocess.run(script_command(argv, nproc), cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done
    return run
