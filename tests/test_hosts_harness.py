"""The multi-host harness holds its promises: hosts share the network, PostgreSQL and S3, never
files; the checkout is read-only but usable inside; a host's processes can all be killed."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from tests.conftest import REPO_ROOT
from tests.support.hosts import DATA_DIR, Host, free_port
from tests.support.s3_server import s3_server

pytestmark = pytest.mark.integration


@pytest.fixture
def two_hosts(tmp_path):
    with Host("a", tmp_path, REPO_ROOT) as a, Host("b", tmp_path, REPO_ROOT) as b:
        yield a, b


def test_files_are_private_to_a_host_and_kept_between_its_processes(two_hosts):
    a, b = two_hosts
    path = f"{DATA_DIR}/only-on-a-{uuid.uuid4().hex}"
    a.run(["sh", "-c", f"echo hello > {path}"], check=True)
    assert a.run(["cat", path], check=True).stdout == "hello\n"
    assert b.run(["test", "-e", path]).returncode == 1
    assert a.run(["sh", "-c", "echo $HOME $TUNELOOP_DATA_DIR"]).stdout.split() == ["/tmp/home", DATA_DIR]
    shm = a.run(["sh", "-c", "touch /dev/shm/from-a && ls /dev/shm"], check=True).stdout
    assert "from-a" in shm and "from-a" not in b.run(["ls", "/dev/shm"]).stdout


def test_the_checkout_is_read_only_but_imports(two_hosts):
    a, _ = two_hosts
    for target in (REPO_ROOT / "probe", REPO_ROOT / ".venv" / "probe", "probe"):  # "probe": in the cwd
        done = a.run(["touch", str(target)])
        assert done.returncode != 0 and "Read-only file system" in done.stderr
        assert not (REPO_ROOT / "probe").exists() and not (REPO_ROOT / ".venv" / "probe").exists()
    done = a.run(["python", "-c", "import tuneloop, vllm; print('imported')"], timeout_s=120, check=True)
    assert done.stdout.strip().endswith("imported")


def test_a_server_on_one_host_answers_every_host_and_stops_with_its_tree(two_hosts):
    a, b = two_hosts
    port = free_port()
    a.run(["sh", "-c", f"echo from-a > {DATA_DIR}/page.txt"], check=True)
    server = a.start(["python", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                     cwd=DATA_DIR, log_name="http")
    url = f"http://127.0.0.1:{port}/page.txt"
    server.wait_http(url, timeout_s=20)
    fetch = ["python", "-c", f"import urllib.request; print(urllib.request.urlopen({url!r}).read().decode())"]
    for host in (a, b):
        assert host.run(fetch, check=True).stdout.strip() == "from-a"
    server.stop()
    assert "GET /page.txt" in server.log_path.read_text()  # the log is readable from outside


def test_kill_all_reaches_processes_that_left_the_process_group(two_hosts):
    a, b = two_hosts
    tree = a.start(["sh", "-c", "sleep 600 & setsid sleep 600 & wait"], log_name="tree")
    def left_the_group():
        return [p for p in a.pids() if p != tree.pid and os.getsid(p) == p]

    deadline = time.monotonic() + 10
    while not (len(a.pids()) == 3 and left_the_group()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(a.pids()) == 3 and b.pids() == []
    tree.kill(signal.SIGKILL)
    tree.wait(timeout_s=5)
    time.sleep(0.2)
    assert a.pids() == left_the_group() != []
    a.kill_all()
    assert a.pids() == []
    assert a.run(["true"]).returncode == 0  # the host still works after a "crash"


def test_s3_writes_on_one_host_are_read_on_another(tmp_path):
    with s3_server(log_path=tmp_path / "moto.log") as s3:
        env = {**s3.env, "ARTIFACTS": s3.artifacts_url}
        with Host("a", tmp_path, REPO_ROOT, env) as a, Host("b", tmp_path, REPO_ROOT, env) as b:
            write = ("import fsspec, os\n"
                     "with fsspec.open(os.environ['ARTIFACTS'] + '/x.txt', 'w') as f:\n"
                     "    f.write('via s3')")
            a.run(["python", "-c", write], check=True)
            read = "import fsspec, os; print(fsspec.open(os.environ['ARTIFACTS'] + '/x.txt').open().read().decode())"
            assert b.run(["python", "-c", read], check=True).stdout.strip() == "via s3"


@pytest.mark.postgres
def test_postgres_is_reachable_from_a_host_over_tcp(tmp_path, postgres_url):
    assert "@127.0.0.1:" in postgres_url  # TCP, not a unix socket (hosts have their own /tmp)
    probe = ("import sqlalchemy as sa, sys; "
             "print(sa.create_engine(sys.argv[1]).connect().execute(sa.text('select 41 + 1')).scalar())")
    with Host("a", tmp_path, REPO_ROOT) as a:
        assert a.run(["python", "-c", probe, postgres_url], timeout_s=60, check=True).stdout.strip() == "42"
