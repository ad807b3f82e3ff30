import os
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
