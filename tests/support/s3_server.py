"""An S3-compatible server on 127.0.0.1 for multi-host tests (moto in server mode).

    with s3_server() as s3:
        host = Host("gw", tmp_path, REPO_ROOT, {**s3.env, "TUNELOOP_ARTIFACTS_URL": s3.artifacts_url})

Every process that honours the standard S3 environment (``s3.env``) reaches the bucket with
nothing else configured; the server keeps its data in memory and is gone after the block.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.hosts import HostError, free_port

REGION = "us-east-1"  # the one region where CreateBucket needs no LocationConstraint


@dataclass(frozen=True)
class S3Server:
    """A running server: ``url`` (the endpoint), ``bucket`` (created, empty at start)."""

    url: str
    bucket: str
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        """The standard S3 environment for any process (boto3, s3fs, pyarrow)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def artifacts_url(self) -> str:
        """fsspec URL for ``TUNELOOP_ARTIFACTS_URL``."""
        return f"s3://{self.bucket}/artifacts"


@contextmanager
def s3_server(
    bucket: str = "tuneloop-test", *, log_path: Path | None = None, timeout_s: float = 30
) -> Iterator[S3Server]:
    """Starts ``moto_server`` on a free 127.0.0.1 port, creates ``bucket`` (>= 3 characters)
    and stops the server at exit. Raises ``HostError`` with the log tail if it does not answer."""
    if len(bucket) < 3:
        raise ValueError(f"bucket name {bucket!r} is too short: S3 needs >= 3 characters")
    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        raise HostError(f"{moto} not found: pip install 'moto[server]' (in the dev extras)")
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="tuneloop-s3-")) / "moto.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_answer(proc, url, log_path, timeout_s)
        import boto3

        server = S3Server(url=url, bucket=bucket, log_path=log_path)
        env = server.env
        boto3.client(
            "s3", endpoint_url=url, region_name=REGION,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=bucket)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()


def _wait_answer(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise HostError(f"moto_server exited with {proc.returncode}; {log_path}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise HostError(f"moto_server did not answer at {url} within {timeout_s} s; {log_path}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
